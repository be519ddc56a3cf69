"""Nothing slow between launch and the client's address (no fixed delay, no heavy import
before the worker is forked or before the first address is on the link).

pyroute2 is the engine's netlink library, and importing it takes 0.1-0.3 s, longer than a
whole qualification in a LAN.  So only `engine.runtime.netlink` imports it, and the run path
up to the fork (CLI, daemon, parent, worker, roles) and the hand-packed requests that put a
client's first address on its fresh device (`engine.runtime.rtnl_min`) must not: a client's
parent imports it after serving its worker's first "up"."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.proto.client import ClientRole

RUN_PATH = ("engine.cli", "engine.runtime.daemon", "engine.runtime.parent",
            "engine.runtime.worker", "engine.runtime.hostfacts", "engine.proto.client",
            "engine.proto.relay", "engine.proto.server", "engine.runtime.rtnl_min",
            "engine.runtime.interface", "engine.runtime.relay_link",
            "engine.runtime.entropy")
HEAVY = ("pyroute2", "asyncio", "ssl")

#: Standard-library modules the run path kept off its imports up to the fork, each for its
#: memory (shared by parent and worker, but paid by every instance) and its time before the
#: first Router Solicitation (docs/performance.md, "Qualification" and "Idle memory"):
DENIED_BEFORE_FORK = {
    "dataclasses": "engine.proto.records (dataclasses pulls in inspect, ast, dis, tokenize)",
    "inspect": "engine.proto.records",
    "ast": "engine.proto.records",
    "logging": "engine.runtime.logsetup's own logger (logging pulls in threading, traceback)",
    "threading": "engine.runtime.logsetup",
    "traceback": "imported by logsetup only when an exception is logged",
    "argparse": "engine.cli._parse_plain; argparse only for unusual command lines",
    "gettext": "argparse's",
    "secrets": "engine.runtime.entropy (os.urandom)",
    "hashlib": "blake2s from _blake2; hashlib would map OpenSSL's libcrypto",
    "hmac": "secrets'",
    "random": "secrets'",
    "difflib": "directive suggestions, imported on a config error only",
    "pyroute2": "a client's parent imports it after qualifying; a relay never does",
    "asyncio": "pyroute2's IPRoute",
}


def _heavy_modules_after(modules: tuple[str, ...]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{HEAVY!r})))\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_the_run_path_up_to_the_fork_does_not_import_pyroute2():
    assert _heavy_modules_after(RUN_PATH) == []


def test_the_run_path_keeps_heavy_standard_modules_out():
    """What a plain command line imports up to the fork, for both tunnel roles: none of
    `DENIED_BEFORE_FORK` (each entry says what replaced it)."""
    code = ("import importlib, json, sys\n"
            f"for m in {RUN_PATH!r}: importlib.import_module(m)\n"
            "from engine import cli\n"
            "cli.parse_args(['-f', '-c', '/etc/miredo/miredo.conf', '-p', '/run/t.pid'])\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    loaded = set(json.loads(cp.stdout))
    assert sorted(loaded & DENIED_BEFORE_FORK.keys()) == []


def test_the_netlink_modules_do_not_load_pyroute2():
    """A client's later changes and host watch (`netlink`) and a relay's whole rtnetlink work
    (`relay_link`) go through `rtnl_min`: no instance loads pyroute2, before the fork or after
    (docs/performance.md, "Idle memory")."""
    assert _heavy_modules_after(("engine.runtime.netlink", "engine.runtime.relay_link")) == []


def test_the_first_router_solicitation_is_due_at_once():
    c = ClientRole(server="203.0.113.10", now=123.0, ping_ident=1)
    assert c.next_timer() == 123.0
    c.handle_timer(123.0)
    assert [dst for _, _, dst in c.udp_out] == [("203.0.113.10", 3544)]
