"""Nothing slow between launch and the first Router Solicitation (no fixed delay, no heavy
import): our client took 0.55 s to get its address where Debian's miredo takes 0.05 s, and
importing pyroute2 was half of it."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.proto.client import ClientRole

RUN_PATH = ("engine.cli", "engine.runtime.daemon", "engine.runtime.supervisor",
            "engine.runtime.netlink", "engine.runtime.worker", "engine.proto.client",
            "engine.proto.relay", "engine.proto.server")


def test_the_run_path_does_not_import_pyroute2():
    code = ("import importlib, json, sys\n"
            f"for m in {RUN_PATH!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2', 'asyncio', 'ssl'))))\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == []


def test_the_first_router_solicitation_is_due_at_once():
    c = ClientRole(server="203.0.113.10", now=123.0, ping_ident=1)
    assert c.next_timer() == 123.0
    c.handle_timer(123.0)
    assert [dst for _, _, dst in c.udp_out] == [("203.0.113.10", 3544)]
