"""`engine.runtime.netlink` and `relay_link` (pyroute2's message classes) against the kernel,
checked with iproute2's own view.

Every operation the engine makes on its interface, and every watcher, runs inside a private
namespace on one end of a veth pair; `ip -j` reads the result back, so a test cannot pass on
what pyroute2 believes it did.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teredolab import netns
from tests.kernel.conftest import unique_prefix

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns():
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("kernel test: needs root")
    name = unique_prefix() + "nlops"
    netns.add(name)
    try:
        # a veth pair (the dummy driver may be missing); no kernel-made link-local on d0
        subprocess.run(["ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name",
                        "d1"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d0", "addrgenmode", "none"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d1", "up"], check=True)
        netns.sysctl(name, "net.ipv6.conf.d0.accept_dad=0")
        netns.sysctl(name, "net.ipv6.conf.d1.accept_dad=0")
        yield name
    finally:
        netns.delete(name)


def in_ns(ns: str, code: str) -> object:
    """Run `code` (which prints one JSON value) with the engine importable, inside `ns`."""
    cp = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
                        capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def ip_json(ns: str, *args: str) -> list[dict]:
    cp = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True,
                        check=True)
    return json.loads(cp.stdout or "[]")


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def addrs_of(ns: str, dev: str) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"])
            for a in ip_json(ns, "addr", "show", "dev", dev)[0]["addr_info"]}


def routes_of(ns: str, dev: str) -> set[tuple[str, int | None]]:
    return {(r["dst"], r.get("metric")) for r in ip_json(ns, "-6", "route", "show", "dev", dev)
            if r.get("protocol") != "kernel"}


PRELUDE = """
import json, socket
from engine.runtime import netlink
from engine.runtime.netlink import TunnelInterface
idx = socket.if_nametoindex("d0")
t = TunnelInterface(idx, "d0")
def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)
"""


def test_client_up_replaces_and_down_flushes(ns):
    """What the worker's "up"/"down" requests do: one Teredo address at a time, the fixed
    link-local, the MTU, ``::/0`` metric 1029; down leaves nothing and the link down."""
    in_ns(ns, PRELUDE + """
t.client_up(a6("2001:0:cb00:710a:8000:f227:bdf7:ffef"), 1280)
print(json.dumps(None))
""")
    link = ip_json(ns, "link", "show", "dev", "d0")[0]
    assert link["mtu"] == 1280 and "UP" in link["flags"]
    assert addrs_of(ns, "d0") == {("2001:0:cb00:710a:8000:f227:bdf7:ffef", 32),
                                  ("fe80::ffff:ffff:ffff", 64)}
    assert routes_of(ns, "d0") == {("default", 1029)}

    # a route someone else put on our interface goes with the flush, like the hook's
    ip(ns, "-6", "route", "add", "2001:db8:7::/48", "dev", "d0", "metric", "1024")
    in_ns(ns, PRELUDE + """
t.client_up(a6("2001:0:cb00:710a:8000:f227:bdf7:fffe"), 1400)
print(json.dumps(None))
""")
    assert routes_of(ns, "d0") == {("default", 1029)}
    got = in_ns(ns, PRELUDE + """
t.client_down()
print(json.dumps(t.address))
""")
    assert got is None
    assert addrs_of(ns, "d0") == set()
    assert routes_of(ns, "d0") == set()
    assert "UP" not in ip_json(ns, "link", "show", "dev", "d0")[0]["flags"]


def test_second_up_has_only_the_new_address(ns):
    in_ns(ns, PRELUDE + """
t.client_up(a6("2001:0:cb00:710a:8000:f227:bdf7:ffef"), 1280)
t.client_up(a6("2001:0:cb00:710a:8000:f227:bdf7:fffe"), 1300)
print(json.dumps(None))
""")
    assert addrs_of(ns, "d0") == {("2001:0:cb00:710a:8000:f227:bdf7:fffe", 32),
                                  ("fe80::ffff:ffff:ffff", 64)}
    assert ip_json(ns, "link", "show", "dev", "d0")[0]["mtu"] == 1300
    assert routes_of(ns, "d0") == {("default", 1029)}


RELAY_PRELUDE = """
import json, socket
from engine.runtime import relay_link
idx = socket.if_nametoindex("d0")
t = relay_link.RelayLink(idx, "d0")
def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)
"""


def test_relay_setup(ns):
    """A relay's set-up goes through `rtnl_min`: pyroute2's rtnetlink message classes, never
    `IPRoute` (pyroute2.iproute) nor the asyncio it pulls in."""
    loaded = in_ns(ns, RELAY_PRELUDE + """
import sys
t.setup(1400, 0x20010000, fresh=True)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pyroute2", "asyncio"))))
""")
    assert "pyroute2.netlink.rtnl.ifaddrmsg" in loaded and "pyroute2.netlink.rtnl.rtmsg" in loaded
    assert [m for m in loaded if m.startswith(("pyroute2.iproute", "asyncio"))] == []
    link = ip_json(ns, "link", "show", "dev", "d0")[0]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    assert addrs_of(ns, "d0") == {("fe80::ffff:ffff:ffff", 64)}
    assert routes_of(ns, "d0") == {("2001::/32", 1024)}
    accept = subprocess.run(["ip", "netns", "exec", ns, "cat",
                             "/proc/sys/net/ipv6/conf/d0/accept_redirects"],
                            capture_output=True, text=True, check=True).stdout
    assert accept.strip() == "0"


def test_relay_setup_again_flushes_what_was_there(ns):
    """A reload that keeps the device sets it up again: addresses and main-table routes
    others put on it go, the kernel's own stay, and our route keeps its metric."""
    ip(ns, "-6", "route", "add", "2001::/32", "dev", "d1", "metric", "1024")  # another relay's
    in_ns(ns, RELAY_PRELUDE + """
t.setup(1400, 0x20010000, fresh=True)
print(json.dumps(None))
""")
    assert routes_of(ns, "d0") == {("2001::/32", 1025)}
    ip(ns, "addr", "add", "198.51.100.7/24", "dev", "d0")
    ip(ns, "-6", "addr", "add", "2001:db8:5::1/64", "dev", "d0", "nodad")
    ip(ns, "-6", "route", "add", "2001:db8:7::/48", "dev", "d0", "metric", "1024")
    ip(ns, "route", "add", "203.0.113.0/24", "dev", "d0")
    in_ns(ns, RELAY_PRELUDE + """
t.setup(1280, 0x20010000)
print(json.dumps(None))
""")
    assert ip_json(ns, "link", "show", "dev", "d0")[0]["mtu"] == 1280
    assert addrs_of(ns, "d0") == {("fe80::ffff:ffff:ffff", 64)}
    assert routes_of(ns, "d0") == {("2001::/32", 1025)}
    assert ip_json(ns, "-4", "route", "show", "dev", "d0") == []


def test_relay_teardown_takes_the_link_down(ns):
    in_ns(ns, RELAY_PRELUDE + """
t.setup(1400, 0x20010000, fresh=True)
t.teardown()
relay_link.RelayLink(99999, "nosuch0").teardown()  # a vanished device: nothing raised
print(json.dumps(None))
""")
    assert "UP" not in ip_json(ns, "link", "show", "dev", "d0")[0]["flags"]


def test_relay_errors_name_the_step_and_the_errno(ns):
    got = in_ns(ns, RELAY_PRELUDE + """
from engine.runtime import rtnl_min
out = {}
try:
    with rtnl_min.Rtnl("nosuch0") as nl:
        nl.link_up(99999, 1280)
except OSError as e:
    out["msg"], out["errno"] = str(e), e.errno
print(json.dumps(out))
""")
    assert got["msg"].startswith("set MTU/up on nosuch0:") and got["errno"] == errno.ENODEV


def test_rtnl_min_first_up_matches_pyroute2_and_pyroute2_takes_over(ns):
    """A client's first address goes through `rtnl_min` (pyroute2's message classes, not
    `IPRoute`): the link ends up exactly as `TunnelInterface.client_up` leaves it, and a later
    change through `netlink` flushes what the first one added."""
    got = in_ns(ns, """
import json, socket, sys
from engine.runtime import rtnl_min
idx = socket.if_nametoindex("d0")
a = socket.inet_pton(socket.AF_INET6, "2001:0:cb00:710a:8000:f227:bdf7:ffef")
ll = socket.inet_pton(socket.AF_INET6, "fe80::ffff:ffff:ffff")
rtnl_min.configure_fresh(idx, "d0", 1280, [(ll, 64), (a, 32)], (bytes(16), 0, 1029))
again = None
try:  # the same requests again: EEXIST is no error, as in the pyroute2 path
    rtnl_min.configure_fresh(idx, "d0", 1280, [(ll, 64), (a, 32)], (bytes(16), 0, 1029))
except OSError as e:
    again = str(e)
iproute = sorted(m for m in sys.modules if m.startswith(("pyroute2.iproute", "asyncio")))
print(json.dumps({"rtmsg": "pyroute2.netlink.rtnl.rtmsg" in sys.modules, "iproute": iproute,
                  "again": again}))
""")
    assert got == {"rtmsg": True, "iproute": [], "again": None}
    link = ip_json(ns, "link", "show", "dev", "d0")[0]
    assert link["mtu"] == 1280 and "UP" in link["flags"]
    assert addrs_of(ns, "d0") == {("2001:0:cb00:710a:8000:f227:bdf7:ffef", 32),
                                  ("fe80::ffff:ffff:ffff", 64)}
    assert routes_of(ns, "d0") == {("default", 1029)}
    in_ns(ns, PRELUDE + """
t.address, t.mtu = a6("2001:0:cb00:710a:8000:f227:bdf7:ffef"), 1280
t.client_up(a6("2001:0:cb00:710a:8000:f227:bdf7:fffe"), 1300)
print(json.dumps(None))
""")
    assert addrs_of(ns, "d0") == {("2001:0:cb00:710a:8000:f227:bdf7:fffe", 32),
                                  ("fe80::ffff:ffff:ffff", 64)}
    assert routes_of(ns, "d0") == {("default", 1029)}


def test_rtnl_min_errors_name_the_step_and_the_errno(ns):
    got = in_ns(ns, """
import json
from engine.runtime import rtnl_min
try:
    rtnl_min.configure_fresh(99999, "nosuch0", 1280, [], (bytes(16), 0, 1029))
except OSError as e:
    print(json.dumps(str(e)))
""")
    assert got.startswith("set MTU/up on nosuch0:") and f"errno {errno.ENODEV}" in got


def test_errors_name_the_change_and_the_errno(ns):
    got = in_ns(ns, PRELUDE + """
gone = TunnelInterface(99999, "nosuch0")
out = {}
try:
    gone.client_up(a6("2001:0:cb00:710a::1"), 1280)
except netlink.NetlinkConfigError as e:
    out["msg"] = str(e)
    out["is_oserror"] = isinstance(e, OSError)
print(json.dumps(out))
""")
    assert got["is_oserror"]
    assert got["msg"].startswith("set MTU/up on nosuch0:") and f"errno {errno.ENODEV}" in got[
        "msg"]


def test_host_links_and_ipv4(ns):
    ip(ns, "addr", "add", "198.18.0.9/24", "dev", "d1")
    got = in_ns(ns, PRELUDE + """
links, addrs = netlink.host_links_and_ipv4()
print(json.dumps({"links": [[l.index, l.name, l.flags] for l in links],
                  "addrs": [list(a) for a in addrs]}))
""")
    by_name = {name: (index, flags) for index, name, flags in got["links"]}
    assert set(by_name) >= {"lo", "d0", "d1"}
    assert by_name["d1"][1] & 0x1  # up
    assert [by_name["d1"][0], "198.18.0.9", 24] in got["addrs"]


def test_address_watcher_sees_host_ipv4_and_link_changes_not_ours(ns):
    """The client's trigger for re-qualifying: an IPv4 address or a link's state changes on
    another interface; changes on our own interface (d0 here) are not a reason."""
    got = in_ns(ns, PRELUDE + """
import select, subprocess
w = netlink.AddressWatcher(idx)
def run(*argv):
    subprocess.run(["ip", *argv], check=True)
def drain():
    out = []
    while select.select([w.fileno()], [], [], 0.5)[0]:
        out += w.drain()
    return out
res = {"idle": w.drain()}
run("addr", "add", "198.18.0.9/24", "dev", "d0")          # our own interface
res["own"] = drain()
run("addr", "add", "198.18.1.9/24", "dev", "d1")
res["added"] = drain()
run("addr", "del", "198.18.1.9/24", "dev", "d1")
res["removed"] = drain()
run("link", "set", "d1", "down")
res["down"] = drain()
w.close()
print(json.dumps(res))
""")
    assert got["idle"] == [] and got["own"] == []
    assert any(r.startswith("IPv4 address 198.18.1.9 added") for r in got["added"])
    assert any(r.startswith("IPv4 address 198.18.1.9 removed") for r in got["removed"])
    assert "link d1 down" in got["down"]


def test_source_watcher_tracks_global_ipv6(ns):
    """The relay's ICMPv6 error sources: global addresses of the host, current, not ours."""
    ip(ns, "-6", "addr", "add", "2001:db8:1::20/64", "dev", "d1", "nodad")
    ip(ns, "-6", "addr", "add", "2001:db8:9::1/64", "dev", "d0", "nodad")  # our own TUN
    got = in_ns(ns, RELAY_PRELUDE + """
import select, subprocess
w = relay_link.SourceAddressWatcher(idx)
def text(srcs):
    return [socket.inet_ntop(socket.AF_INET6, a) for a in srcs]
res = {"start": text(w.sources)}
subprocess.run(["ip", "-6", "addr", "add", "2001:db8:2::20/64", "dev", "d1", "nodad"],
               check=True)
subprocess.run(["ip", "-6", "addr", "del", "2001:db8:1::20/64", "dev", "d1"], check=True)
changed = False
while select.select([w.fileno()], [], [], 0.5)[0]:
    changed = w.drain() or changed
res["changed"] = changed
res["after"] = text(w.sources)
w.close()
print(json.dumps(res))
""")
    assert got["start"] == ["2001:db8:1::20"]
    assert got["changed"] is True
    assert got["after"] == ["2001:db8:2::20"]
