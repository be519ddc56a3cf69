"""Nothing slow between launch and the client's address (no fixed delay, no heavy import
before the worker is forked or before the first address is on the link).

pyroute2 is the engine's netlink library, used leanly (docs/performance.md, "Keeping pyroute2,
leanly"): its rtnetlink message classes, loaded by `rtnl_min.load` through `pyroute2_lean`
(before a relay's fork, by its set-up; right after a client's), are allowed; its `IPRoute`
(``pyroute2.iproute``, which imports asyncio and ~240 modules, 0.1-0.3 s, longer than a whole
qualification in a LAN) and the package ``__init__`` (every netlink family) are not, before the
fork or after."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.proto.client import ClientRole

RUN_PATH = ("engine.cli", "engine.runtime.daemon", "engine.runtime.parent",
            "engine.runtime.worker", "engine.runtime.hostfacts", "engine.proto.client",
            "engine.proto.relay", "engine.proto.server", "engine.runtime.rtnl_min",
            "engine.runtime.interface", "engine.runtime.relay_link",
            "engine.runtime.entropy")
HEAVY = ("pyroute2.iproute", "pyroute2.netlink.rtnl.ifinfmsg", "pyroute2.ndb", "pyroute2.ipdb",
         "pyroute2.nftables", "pyroute2.ipset", "pyroute2.wireguard", "asyncio", "ssl")
#: What `rtnl_min.load` is expected to bring: pyroute2's message classes and no more.
PYROUTE2_LEAN = ("pyroute2.netlink.rtnl.ifaddrmsg", "pyroute2.netlink.rtnl.rtmsg",
                 "pyroute2.netlink")

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
    "asyncio": "pyroute2's IPRoute; rtnl_min uses pyroute2's message classes instead",
    "pyroute2.iproute": "rtnl_min: pyroute2's message classes over a socket of our own",
    "multiprocessing": "pyroute2's ifinfmsg (its link-kind plugins); rtnl_min's link class",
    "platform": "pyroute2.config, which pyroute2's ifinfmsg imports",
    "typing": "annotations only (a local TYPE_CHECKING); `Role` in engine.proto.role_protocol; "
              "pyroute2's: pyroute2_lean.lent_modules",
}

#: Of the above, what pyroute2 itself imports at module level when `rtnl_min.load` brings its
#: message classes in before the fork: nothing.  ``pyroute2.netlink`` imports logging,
#: typing, threading and traceback; `pyroute2_lean.lent_modules` lends it stand-ins for the
#: little it uses of them, and docs/performance.md ("Without typing") counts what they cost.
IMPORTED_BY_PYROUTE2: set[str] = set()


def _modules_after(modules: tuple[str, ...], load: bool = True) -> set[str]:
    """`sys.modules` of a fresh interpreter after importing `modules` (and, with `load`,
    after `rtnl_min.load`, as the parent does before its fork)."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            + ("from engine.runtime import rtnl_min\nrtnl_min.load()\n" if load else "")
            + "ran = 'IPRoute' in vars(sys.modules.get('pyroute2', sys))\n"
            "print(json.dumps(sorted(sys.modules) + (['<pyroute2 __init__>'] if ran else [])))\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return set(json.loads(cp.stdout))


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m == "<pyroute2 __init__>"
                  or any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_the_run_path_loads_no_ctypes_where_privcalls_is_built():
    """prctl and capset come from the compiled `_privcalls`; ctypes (with libffi, about 2 ms
    before the fork and 0.3 MiB) only where it is not built (docs/performance.md, "Without
    ctypes")."""
    from engine.runtime import privcalls

    if privcalls.IMPLEMENTATION != "compiled":
        pytest.skip("engine.runtime._privcalls is not built")
    loaded = _modules_after((*RUN_PATH, "engine.runtime.capabilities", "engine.runtime.daemon"))
    assert sorted(m for m in loaded if m in ("ctypes", "_ctypes")) == []


def test_the_run_path_up_to_the_fork_loads_pyroute2_leanly():
    """pyroute2's message classes (a relay's parent at its fork), without its ``__init__``,
    IPRoute or asyncio."""
    loaded = _modules_after(RUN_PATH)
    assert [m for m in PYROUTE2_LEAN if m not in loaded] == []
    assert _heavy(loaded) == []


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


def test_what_pyroute2_adds_before_the_fork_is_none_of_them():
    """With `rtnl_min.load` (a relay parent's state at the fork), none of the denied modules
    either: pyroute2's message classes get stand-ins (`IMPORTED_BY_PYROUTE2`)."""
    loaded = _modules_after(RUN_PATH)
    assert sorted((loaded & DENIED_BEFORE_FORK.keys()) - IMPORTED_BY_PYROUTE2) == []


def test_the_netlink_modules_do_not_load_iproute():
    """A client's later changes and host watch (`netlink`, `hostwatch`) and a relay's whole
    rtnetlink work (`relay_link`) go through `rtnl_min`: no instance loads IPRoute or asyncio,
    before the fork or after (docs/performance.md, "Idle memory")."""
    loaded = _modules_after(("engine.runtime.netlink", "engine.runtime.relay_link",
                             "engine.runtime.hostwatch"))
    assert "pyroute2.netlink.rtnl.ifaddrmsg" in loaded
    assert _heavy(loaded) == []


def test_the_first_router_solicitation_is_due_at_once():
    c = ClientRole(server="203.0.113.10", now=123.0, ping_ident=1)
    assert c.next_timer() == 123.0
    c.handle_timer(123.0)
    assert [dst for _, _, dst in c.udp_out] == [("203.0.113.10", 3544)]


def test_the_interpreter_starts_without_an_install_finder():
    """`make venv` installs the checkout with a plain ``.pth`` line (editable_mode=compat).
    setuptools' default editable mode installs an import finder instead, which every
    interpreter start imports from ``site``, pathlib, re and urllib.parse with it: ``site``
    18 ms instead of 3, a bare interpreter 1.8 MiB more PSS (docs/performance.md, "The
    evening pass")."""
    code = "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    loaded = set(json.loads(cp.stdout))
    assert sorted(m for m in loaded if m.startswith("__editable__")) == []
    assert sorted(loaded & {"pathlib", "urllib.parse"}) == []


#: What a client's worker must never import for its UPnP keeper (RFC 6081 §3.2), each with why
#: (docs/performance.md, "The UPnP client without http.client"):
DENIED_IN_THE_UPNP_KEEPER = {
    "http.client": "engine.runtime.http_lite (a plain socket)",
    "ssl": "http.client's: OpenSSL's libssl and libcrypto, for a LAN device spoken to in http",
    "email": "http.client's header parser",
    "xml.etree": "expat directly (engine.runtime.upnp.parse_xml)",
    "encodings.idna": "no host names: http_lite connects to IPv4 addresses only",
    "unicodedata": "encodings.idna's",
    "threading": "three _thread locks (engine.runtime.upnp_keeper)",
    "urllib": "http_lite.split_url and join_url (urllib.parse imports ipaddress: 1.7 ms)",
    "ipaddress": "urllib.parse's",
}


def test_the_upnp_keeper_loads_no_tls_mail_or_element_tree():
    """A client's worker imports the keeper after its fork (engine.runtime.worker); what it
    brings is the worker's own, paid by every client with `UpnpSymmetricNat` on (the
    default)."""
    loaded = _modules_after(("engine.runtime.upnp_keeper",), load=False)
    assert "engine.runtime.http_lite" in loaded
    assert sorted(m for m in loaded if any(m == d or m.startswith(d + ".")
                                           for d in DENIED_IN_THE_UPNP_KEEPER)) == []


#: A fresh interpreter loads the classes (after `logging` when asked), then decodes an address
#: notification whose IPv6 address attribute is 3 bytes long.
_QUIET = """
import json, struct, sys
if sys.argv[1] == "first": import logging
from engine.runtime import rtnl_min
rtnl_min.load()
seen = {"logging_at_load": "logging" in sys.modules}
body = struct.pack("=BBBBI", 10, 64, 0, 0, 1) + struct.pack("=HH", 7, 1) + b"\\x20\\x01\\x0d\\0"
msg = struct.pack("=IHHII", 16 + len(body), rtnl_min.RTM_NEWADDR, 0, 0, 0) + body
try:
    rtnl_min.parse_addr(rtnl_min.RTM_NEWADDR, msg)
except rtnl_min.MalformedError as e:
    seen["error"] = str(e)
import logging
seen["real_logging_later"] = hasattr(logging, "Logger") and hasattr(logging, "NullHandler")
print(json.dumps(seen))
"""


def test_pyroute2_gets_a_logging_that_drops_its_messages():
    """`pyroute2.netlink` imports `logging` for its own messages (0.5 MiB, a few ms of a
    client's way to its address); `rtnl_min.load` lends it a stand-in that drops them, and
    leaves the real module to whatever imports it later.  pyroute2's complaint about an
    attribute it cannot decode (with a traceback) stays off stderr either way, and the
    message is still refused as malformed; with `logging` already imported, the real one is
    kept and pyroute2's logger is silenced instead."""
    for when in ("never", "first"):
        cp = subprocess.run([sys.executable, "-c", _QUIET, when], capture_output=True,
                            text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert cp.stderr == ""
        seen = json.loads(cp.stdout)
        assert seen == {"logging_at_load": when == "first",
                        "error": "IFA_ADDRESS did not decode", "real_logging_later": True}


_LENT = """
import json, struct, sys
from engine.runtime import pyroute2_lean, rtnl_min
LENT = ("typing", "threading", "traceback", "logging")
rtnl_min.load()
seen = {"after_load": [m for m in LENT if m in sys.modules]}
link = rtnl_min.parse_link(rtnl_min.RTM_NEWLINK,
                           rtnl_min._build("ifinfmsg", rtnl_min.RTM_NEWLINK, 0, 0,
                                           {"index": 7, "flags": 1}, [("IFLA_IFNAME", "tq0")]))
seen["link"] = [link.index, link.flags, link.name]
# an attribute pyroute2 cannot decode: its error path formats a traceback, on first use
body = struct.pack("=BBBBI", 10, 64, 0, 0, 1) + struct.pack("=HH", 7, 1) + b"\\x20\\x01\\x0d\\0"
msg = struct.pack("=IHHII", 16 + len(body), rtnl_min.RTM_NEWADDR, 0, 0, 0) + body
try:
    rtnl_min.parse_addr(rtnl_min.RTM_NEWADDR, msg)
except rtnl_min.MalformedError:
    pass
seen["after_error"] = [m for m in LENT if m in sys.modules]
seen["real_traceback"] = hasattr(sys.modules["traceback"], "TracebackException")
with pyroute2_lean.lent_modules():
    from typing import Optional
    seen["stand_in_name"] = repr(Optional[int])
    from typing import Generic
    seen["unknown_name_is_real"] = Generic.__module__
seen["real_typing_after"] = hasattr(sys.modules["typing"], "NamedTuple")
print(json.dumps(seen))
"""


def test_pyroute2_gets_stand_ins_for_what_it_barely_uses():
    """pyroute2's netlink modules import `typing` for annotations, `threading` for one lock
    and one thread-local, `traceback` for error paths, `logging` for messages the engine
    drops; `rtnl_min.load` lends them stand-ins (about 1.2 MiB less in every instance's
    tree), and its message classes still build and decode.  A name a stand-in does not hold
    is the real module's, imported then and kept (the traceback of a decode error, a
    `typing` name used at run time)."""
    cp = subprocess.run([sys.executable, "-c", _LENT], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    assert json.loads(cp.stdout) == {
        "after_load": [], "link": [7, 1, "tq0"], "after_error": ["traceback"],
        "real_traceback": True, "stand_in_name": "<annotation-only typing stand-in>",
        "unknown_name_is_real": "typing", "real_typing_after": True}
