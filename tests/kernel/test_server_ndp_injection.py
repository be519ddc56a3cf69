"""Issue 9, flaw 1 on a real link: a Neighbor Advertisement smuggled through the server's
ping-test path must not repoint the on-link neighbour entry of the server's own address.

The attacker is the relay namespace, an ordinary host with a public IPv4: it needs no spoofing
at all, since the server's only check (S5) is that the Teredo source embeds the UDP source.  The
"router" is the native IPv6 host on the server's IPv6 link, which learned the server's real MAC
by a ping first.  Debian's miredo-server is the control: against it the same datagram does
rewrite the entry (so this test can tell a hole from a fix); against ours the entry stays.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from tests.kernel.harness import (
    DEBIAN,
    OURS,
    Implementation,
    Stack,
    engine_status,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.kernel

FAKE_MAC = "02:00:de:ad:be:ef"
ATTACK_PORT = 41234


def _checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """ICMPv6 checksum (RFC 4443 §2.3), written here so the test does not trust the engine."""
    data = src + dst + len(icmp).to_bytes(4, "big") + bytes((0, 0, 0, 58)) + icmp
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _teredo(server: str, port: int, client: str) -> bytes:
    """RFC 4380 §4: 2001:0::/32, server IPv4, flags 0, obfuscated port and client IPv4."""
    obf_client = bytes(b ^ 0xFF for b in ipaddress.IPv4Address(client).packed)
    return (bytes.fromhex("20010000") + ipaddress.IPv4Address(server).packed + bytes(2)
            + (port ^ 0xFFFF).to_bytes(2, "big") + obf_client)


def neighbor_advertisement(src: bytes, dst: bytes, target: bytes, mac: str) -> bytes:
    """A 72-byte IPv6 packet: NA with the Override flag and a target link-layer option."""
    body = bytes((0x20, 0, 0, 0)) + target + bytes((2, 1)) + bytes.fromhex(mac.replace(":", ""))
    icmp = bytes((136, 0, 0, 0)) + body
    icmp = icmp[:2] + _checksum(src, dst, icmp).to_bytes(2, "big") + icmp[4:]
    header = bytes((0x60, 0, 0, 0)) + len(icmp).to_bytes(2, "big") + bytes((58, 255))
    return header + src + dst + icmp


def _lladdr(lab, role: str, address: str) -> str | None:
    out = lab.exec(role, ["ip", "-j", "-6", "neigh", "show", address], check=True).stdout
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def _send_udp(lab, role: str, src_ip: str, src_port: int, dst: tuple[str, int], payload: bytes):
    code = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            f"s.bind(({src_ip!r},{src_port}));"
            f"[s.sendto(bytes.fromhex({payload.hex()!r}),({dst[0]!r},{dst[1]})) for _ in range(3)]")
    lab.exec(role, ["python3", "-c", code], check=True)


@pytest.mark.parametrize("impl", [OURS, DEBIAN], ids=["ours", "debian-control"])
def test_spoofed_na_through_the_server_leaves_the_routers_neighbour_entry(
        impl: Implementation, debian_miredo, lab, run_dir: Path):
    spec = lab.spec
    stack = Stack(lab, run_dir)
    try:
        start_server(stack, impl)
        # the "router" learns the server's real MAC
        lab.exec("v6", ["ping", "-6", "-c", "2", "-W", "2", spec.srv_ip6], check=True)
        real = _lladdr(lab, "v6", spec.srv_ip6)
        assert real and real != FAKE_MAC, f"v6 host has no neighbour entry for {spec.srv_ip6}"

        src = _teredo(spec.srv_ip1, ATTACK_PORT, spec.rly_ip4)
        na = neighbor_advertisement(src, ipaddress.IPv6Address(spec.v6_host).packed,
                                    ipaddress.IPv6Address(spec.srv_ip6).packed, FAKE_MAC)
        _send_udp(lab, "rly", spec.rly_ip4, ATTACK_PORT, (spec.srv_ip1, 3544), na)
        if impl is DEBIAN:
            # the control: miredo-server forwards it, so the attack in this test is real
            wait_for(lambda: _lladdr(lab, "v6", spec.srv_ip6) == FAKE_MAC,
                     "miredo-server to forward the NA (the control)")
        else:
            # all three datagrams reached the server and were refused for the right reason
            wait_for(lambda: engine_status(stack.daemons[0].status_socket)["counters"]["drops"]
                     .get("a5_not_echo_request", 0) >= 3, "the server to drop the NA")
            after = _lladdr(lab, "v6", spec.srv_ip6)
            assert after == real, f"neighbour entry of {spec.srv_ip6} became {after}"
        for d in stack.daemons:
            d.ensure_alive()
    finally:
        stack.stop()
