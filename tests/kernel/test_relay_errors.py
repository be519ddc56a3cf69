"""ICMPv6 errors of a relay reach the native sender (spec §5.9, §6).

miredo sends them through a raw ICMPv6 socket, so the kernel gives them a routable source; a
relay that writes them to its TUN device with the link-local `fe80::ffff:ffff:ffff` source
loses them, because the kernel never forwards a link-local-sourced packet.  The native host
`v6` pings through the relay:

* a non-Teredo destination that is (mis)routed into the relay's Teredo interface: T3, an
  address-unreachable error at once;
* a Teredo address nobody answers for (its server is real, its client does not exist): the
  relay queues, sends its 4 bubbles, and then refuses with address unreachable (T8 NEVER).

Both errors must come back to `v6`, from the relay host's global address, and from its new
address once that changes under the running relay.  Debian's relay is run through the same
test as the reference.
"""

from __future__ import annotations

import ipaddress
import re

import pytest

from tests.kernel.harness import DEBIAN, OURS, Stack, start_relay

pytestmark = pytest.mark.kernel

MISROUTED = "2001:db8:ff::/48"  # not Teredo; routed into the relay's tunnel on purpose
MISROUTED_HOST = "2001:db8:ff::1"
_UNREACH = re.compile(r"From (\S+?):? icmp_seq=\d+ Destination unreachable: (.+)")


def ghost_client(spec) -> str:
    """A Teredo address under the lab's server whose mapped client does not exist."""
    net = spec.teredo_network.network_address.packed[:4]
    server = ipaddress.IPv4Address(spec.srv_ip1).packed
    port = (40000 ^ 0xFFFF).to_bytes(2, "big")
    client = bytes(b ^ 0xFF for b in ipaddress.IPv4Address("198.51.100.99").packed)
    return str(ipaddress.IPv6Address(net + server + b"\x00\x00" + port + client))


def unreachables(output: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2).strip()) for m in _UNREACH.finditer(output)]


def ping6(lab, dst: str, count: int, interval: float) -> str:
    cp = lab.exec("v6", ["ping", "-6", "-n", "-c", str(count), "-i", f"{interval:g}",
                         "-W", "1", dst], timeout=count * interval + 15)
    return cp.stdout + cp.stderr


@pytest.mark.parametrize("impl", [OURS, DEBIAN], ids=["ours", "debian"])
def test_relay_errors_reach_the_native_sender(debian_miredo, lab_factory, run_dir, impl):
    lab = lab_factory(with_client2=False)
    spec = lab.spec
    stack = Stack(lab, run_dir)
    try:
        relay = start_relay(stack, impl)
        lab.exec("v6", ["ip", "-6", "route", "add", MISROUTED, "via", spec.rly_ip6],
                 check=True)
        lab.exec("rly", ["ip", "-6", "route", "add", MISROUTED, "dev", spec.teredo_if],
                 check=True)

        out = ping6(lab, MISROUTED_HOST, count=3, interval=0.3)
        got = unreachables(out)
        assert got, f"no Destination Unreachable for {MISROUTED_HOST}:\n{out}\n{relay.log_text()}"
        assert {src for src, _ in got} == {spec.rly_ip6}, got
        assert all(what == "Address unreachable" for _, what in got), got

        ghost = ghost_client(spec)
        # bubbles at ~0, 3, 6 and 9 s (each > 2 s after the previous one); then NEVER
        out = ping6(lab, ghost, count=16, interval=1.0)
        got = unreachables(out)
        assert got, f"no Destination Unreachable for {ghost}:\n{out}\n{relay.log_text()}"
        assert {src for src, _ in got} == {spec.rly_ip6}, got
        assert all(what == "Address unreachable" for _, what in got), got

        # the relay host's address changes while it runs: errors follow (netlink)
        new_ip6 = str(ipaddress.IPv6Address(spec.rly_ip6) + 1)
        lab.exec("rly", ["ip", "-6", "addr", "add", f"{new_ip6}/{spec.v6_plen}", "dev",
                         "inet6", "nodad"], check=True)
        lab.exec("rly", ["ip", "-6", "addr", "del", f"{spec.rly_ip6}/{spec.v6_plen}", "dev",
                         "inet6"], check=True)
        lab.exec("v6", ["ip", "-6", "route", "replace", MISROUTED, "via", new_ip6], check=True)
        out = ping6(lab, MISROUTED_HOST, count=3, interval=0.3)
        got = unreachables(out)
        assert {src for src, _ in got} == {new_ip6}, f"{got}\n{out}\n{relay.log_text()}"
    finally:
        codes = stack.stop()
    assert codes == dict.fromkeys(codes, 0), stack.logs()
