"""`engine.runtime.rtnl` against the kernel, checked with iproute2's own view.

The engine configures its interface through this small rtnetlink client (pyroute2 cost more
start-up time than a whole qualification).  Each operation runs inside a private namespace
with a veth interface; `ip -j` reads the result back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from miredoctl import netns
from tests.kernel.conftest import unique_prefix

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns():
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("kernel test: needs root")
    name = unique_prefix() + "rtnl"
    netns.add(name)
    try:
        # a veth pair (the dummy driver may be missing); no kernel-made link-local on d0
        subprocess.run(["ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name",
                        "d1"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d0", "addrgenmode", "none"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d1", "up"], check=True)
        netns.sysctl(name, "net.ipv6.conf.d0.accept_dad=0")
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


PRELUDE = """
import json, socket
from engine.runtime.rtnl import Rtnl, RtnlError
r = Rtnl()
idx = {l.name: l.index for l in r.links()}["d0"]
"""


def test_link_address_route_round_trip(ns):
    got = in_ns(ns, PRELUDE + """
r.link_set(idx, mtu=1400, up=True)
r.addr_add(idx, "fe80::ffff:ffff:ffff", 64)
r.addr_add(idx, "2001:0:cb00:710a::1", 32)
r.addr_add(idx, "198.18.0.9", 24)
r.route_add(socket.AF_INET6, "::", 0, idx, 1029)
r.route_add(socket.AF_INET6, "2001:db8:7::", 48, idx, 1024)
try:
    r.addr_add(idx, "2001:0:cb00:710a::1", 32)
    dup = None
except RtnlError as e:
    dup = e.code
links = [l for l in r.links() if l.index == idx]
print(json.dumps({
    "idx": idx, "dup": dup, "mtu": links[0].mtu, "up": bool(links[0].flags & 1),
    "addrs": sorted([a.address, a.prefixlen] for a in r.addresses(index=idx)),
    "v4": [a.address for a in r.addresses(socket.AF_INET, index=idx)],
    "routes": sorted(([x.dst, x.dst_len, x.priority] for x in r.routes(socket.AF_INET6)
                      if x.oif == idx and x.protocol != 2), key=lambda v: (v[0] or "", v[1])),
}))
""")
    import errno
    assert got["dup"] == errno.EEXIST
    assert got["mtu"] == 1400 and got["up"]
    assert got["addrs"] == [["198.18.0.9", 24], ["2001:0:cb00:710a::1", 32],
                            ["fe80::ffff:ffff:ffff", 64]]
    assert got["v4"] == ["198.18.0.9"]
    assert got["routes"] == [[None, 0, 1029], ["2001:db8:7::", 48, 1024]]
    link = ip_json(ns, "link", "show", "dev", "d0")[0]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    addrs = {(a["local"], a["prefixlen"]) for a in ip_json(ns, "addr", "show", "dev", "d0")[0]
             ["addr_info"]}
    assert addrs == {("198.18.0.9", 24), ("2001:0:cb00:710a::1", 32),
                     ("fe80::ffff:ffff:ffff", 64)}
    routes = {(r["dst"], r.get("metric")) for r in ip_json(ns, "-6", "route", "show", "dev", "d0")
              if r.get("protocol") != "kernel"}
    assert routes == {("default", 1029), ("2001:db8:7::/48", 1024)}


def test_flush_through_tunnel_interface(ns):
    """TunnelInterface's own flush (what every DOWN and exit does) empties the interface."""
    got = in_ns(ns, PRELUDE + """
from engine.runtime.netlink import TunnelInterface
t = TunnelInterface(idx, "d0")
t.client_up(socket.inet_pton(socket.AF_INET6, "2001:0:cb00:710a:8000:f227:bdf7:ffef"), 1280)
t.client_up(socket.inet_pton(socket.AF_INET6, "2001:0:cb00:710a:8000:f227:bdf7:fffe"), 1300)
after_up = sorted(a.address for a in r.addresses(index=idx))
t.client_down()
print(json.dumps({"after_up": after_up,
                  "after_down": [a.address for a in r.addresses(index=idx)]}))
""")
    # a new address replaces the old one: never two Teredo addresses at once
    assert got["after_up"] == ["2001:0:cb00:710a:8000:f227:bdf7:fffe", "fe80::ffff:ffff:ffff"]
    assert got["after_down"] == []
    link = ip_json(ns, "link", "show", "dev", "d0")[0]
    assert "UP" not in link["flags"]
    assert [r for r in ip_json(ns, "-6", "route", "show", "dev", "d0")] == []


def test_errors_carry_the_errno(ns):
    got = in_ns(ns, PRELUDE + """
out = {}
for what, fn in (("del_missing_addr", lambda: r.addr_del(idx, "2001:db8::5", 64)),
                 ("no_such_link", lambda: r.link_set(99999, up=True)),
                 ("del_missing_route", lambda: r.route_del(socket.AF_INET6, "2001:db8:9::", 48,
                                                            idx, 5))):
    try:
        fn()
        out[what] = 0
    except RtnlError as e:
        out[what] = e.code
print(json.dumps(out))
""")
    import errno
    assert got == {"del_missing_addr": errno.EADDRNOTAVAIL, "no_such_link": errno.ENODEV,
                   "del_missing_route": errno.ESRCH}
