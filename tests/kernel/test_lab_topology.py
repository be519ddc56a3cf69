"""The lab network itself: it builds, passes its reachability checks, removes itself
completely, cleans up after a failed build, coexists with another lab, and refuses addresses
outside the documentation ranges."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest

from teredolab import netns
from teredolab.topology import ROLES, LabError, LabSpec, NetnsLab, check_lab_address, nat_ruleset


def _ns_with_prefix(prefix: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(prefix)]


_RECV_ONE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(5)
print(s.recvfrom(100)[1][0], flush=True)
"""
_SEND_ONE = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


def _udp_source_seen(lab: NetnsLab, src_role: str, dst_role: str, dst_ip: str) -> str:
    """Send one UDP datagram between two lab hosts; return the source IP the receiver saw."""
    rx = lab.spawn(dst_role, [sys.executable, "-c", _RECV_ONE, dst_ip],
                   stdout=subprocess.PIPE, text=True)
    try:
        port = rx.stdout.readline().strip()
        lab.exec(src_role, [sys.executable, "-c", _SEND_ONE, dst_ip, port], check=True)
        return rx.stdout.readline().strip()
    finally:
        rx.kill()
        rx.wait()


# ----------------------------------------------------------------- address guard (no root)
@pytest.mark.parametrize("field,value", [
    ("srv_ip1", "8.8.8.8"),
    ("cli_ip", "10.0.0.2"),
    ("nat_wan", "192.0.3.1"),
    ("rly_ip6", "2001:4860::20"),
    ("v6_host", "fe80::1"),
    ("teredo_prefix", "3ffe::"),
])
def test_spec_refuses_addresses_outside_the_lab_ranges(field, value):
    with pytest.raises(LabError, match=field):
        LabSpec(prefix="g-", **{field: value})


@pytest.mark.parametrize("cidr", ["10.1.2.3/8", "203.0.113.5/16", "198.18.0.1/14",
                                  "2001:db9::1/64", "2001:db8::1/16", "::1/128", "not-an-ip"])
def test_address_guard_refuses(cidr):
    with pytest.raises(LabError):
        check_lab_address(cidr)


@pytest.mark.parametrize("cidr", ["192.0.2.7/24", "198.51.100.1/24", "203.0.113.10/24",
                                  "198.19.0.2/24", "2001:db8:1::10/64"])
def test_address_guard_accepts(cidr):
    check_lab_address(cidr)


def test_lab_revalidates_a_spec_that_bypassed_its_checks():
    spec = LabSpec(prefix="g-")
    object.__setattr__(spec, "rly_ip4", "1.1.1.1")  # frozen dataclass, forced on purpose
    with pytest.raises(LabError, match="rly_ip4"):
        NetnsLab(spec)
    assert not _ns_with_prefix("g-")


@pytest.mark.parametrize("prefix", ["", "-x", "a b", "x" * 17, "a/b"])
def test_spec_refuses_bad_prefixes(prefix):
    with pytest.raises(LabError, match="prefix"):
        LabSpec(prefix=prefix)


def test_nat_rulesets_differ_where_the_types_differ():
    r = {t: nat_ruleset(t, "198.18.0.0/24", "198.51.100.1", "198.18.0.2")
         for t in ("restricted", "restricted-nofw", "symmetric", "fullcone")}
    assert 'iifname "wan" drop' in r["restricted"]
    assert 'iifname "wan" drop' not in r["restricted-nofw"]
    assert "masquerade fully-random" in r["symmetric"]
    assert "dnat to 198.18.0.2" in r["fullcone"] and "dnat" not in r["restricted"]
    with pytest.raises(LabError, match="NAT type"):
        nat_ruleset("cone", "198.18.0.0/24", "198.51.100.1", "198.18.0.2")


# ----------------------------------------------------------------- the real thing (root)
@pytest.mark.kernel
def test_up_check_down_leaves_nothing(lab_factory):
    lab = lab_factory()
    prefix = lab.spec.prefix
    assert sorted(_ns_with_prefix(prefix)) == sorted(prefix + r for r in ROLES)
    assert all(r.ok for r in lab.check())

    st = lab.status()
    assert st["up"] is True
    assert "203.0.113.10/24" in st["roles"]["srv"]["interfaces"]["inet4"]["addresses"]
    assert "2001:db8:1::100/64" in st["roles"]["v6"]["interfaces"]["inet6"]["addresses"]
    assert st["roles"]["inet"]["interfaces"]["br4"]["addresses"] == []
    # interface names on the bridges stay short (<= 15 chars)
    assert all(len(i) <= 15 for r in st["roles"].values() for i in r["interfaces"])

    # the NAT really translates: the server sees the NAT's public address, not the LAN one
    assert _udp_source_seen(lab, "cli", "srv", lab.spec.srv_ip1) == lab.spec.nat_wan
    assert _udp_source_seen(lab, "cli2", "srv", lab.spec.srv_ip1) == lab.spec.nat2_wan

    lab.down()
    assert _ns_with_prefix(prefix) == []
    assert lab.status()["up"] is False


@pytest.mark.kernel
def test_up_is_idempotent_and_down_stops_leftover_processes(lab_factory):
    lab = lab_factory(check=False)
    lab.up()  # again: removes the first instance, builds a fresh one
    sleeper = lab.spawn("cli", ["sleep", "300"])
    try:
        deadline = time.monotonic() + 5
        while sleeper.pid not in netns.pids(lab.ns("cli")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sleeper.pid in lab.status()["roles"]["cli"]["pids"]
        stopped = lab.down()
        assert sleeper.pid in stopped
        assert sleeper.wait(timeout=5) == -15  # SIGTERM, by PID
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert _ns_with_prefix(lab.spec.prefix) == []


@pytest.mark.kernel
def test_failing_up_cleans_up_and_names_the_step(lab_factory):
    # Two identical addresses on one interface: the kernel refuses the second one half-way
    # through the build ("Address already assigned").
    with pytest.raises(LabError) as info:
        lab_factory(srv_ip2="203.0.113.10")
    msg = str(info.value)
    assert "step 'srv: address 2'" in msg and "already assigned" in msg
    assert "\n" not in msg
    prefix = msg.split()[1].rstrip(":")
    assert prefix.startswith("k") and _ns_with_prefix(prefix) == []


@pytest.mark.kernel
def test_two_labs_with_different_prefixes_coexist(lab_factory):
    a = lab_factory()
    b = lab_factory(with_client2=False, nat_type="symmetric")
    assert a.spec.prefix != b.spec.prefix
    assert len(_ns_with_prefix(b.spec.prefix)) == len(ROLES) - 2
    with pytest.raises(LabError, match="not part of this lab"):
        b.ns("cli2")
    a.check()
    b.check()
    b.down()
    assert _ns_with_prefix(b.spec.prefix) == []
    assert all(r.ok for r in a.check())


@pytest.mark.kernel
def test_nothing_is_added_to_the_root_namespace(lab_factory):
    def root_links() -> set[str]:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}

    lab_names: set[str] = set()
    before = root_links()
    lab = lab_factory(check=False)
    during = root_links()
    root_addrs = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True,
                                text=True).stdout
    for role in lab.spec.roles():
        lab_names |= set(lab.status()["roles"][role]["interfaces"])
    lab.down()
    assert lab_names >= {"br4", "br6", "inet4", "wan", "lan", "srv4", "nat24"}
    # Only compare the lab's own interface names: other test runs on this machine may come
    # and go, but none of these names may ever appear in the root namespace.
    assert not (during - before) & lab_names
    for addr in (lab.spec.srv_ip1, lab.spec.rly_ip4, lab.spec.nat_wan, lab.spec.cli_ip,
                 lab.spec.v6_host):
        assert f" {addr}/" not in root_addrs


def test_spec_replace_revalidates():
    spec = LabSpec(prefix="g-")
    assert spec.replace(nat2_type="symmetric").nat2_type == "symmetric"
    with pytest.raises(LabError):
        spec.replace(nat2_type="open")
    assert dataclasses.asdict(spec)["srv_ip1"] == "203.0.113.10"


def test_rfc6081_nat_kinds_and_the_shared_nat():
    seq = nat_ruleset("symmetric-sequential", "198.19.0.0/24", "198.51.100.2", "198.19.0.2")
    assert "numgen inc mod 256 map { 0 : 20000, 1 : 20001," in seq and "255 : 20255 }" in seq
    pres = nat_ruleset("symmetric-preserving", "198.19.0.0/24", "198.51.100.2", "198.19.0.2")
    assert "udp sport @seen snat to 198.51.100.2:1024-65535 fully-random" in pres
    assert "add @seen { udp sport } snat to 198.51.100.2" in pres
    two = nat_ruleset("restricted", "198.18.0.0/24", "198.51.100.1", "198.18.0.2",
                      extra_lans=["198.19.0.0/24"])
    assert 'iifname { "lan", "lan2" } oifname { "lan", "lan2" } accept' in two
    shared = LabSpec(nat2_type="shared")
    assert "nat2" not in shared.roles() and "cli2" in shared.roles()
    assert shared.cli2_wan == shared.nat_wan
    with pytest.raises(LabError, match="shared"):
        LabSpec(nat_type="shared")
    with pytest.raises(LabError, match="NAT type"):
        nat_ruleset("shared", "198.18.0.0/24", "198.51.100.1", "198.18.0.2")
