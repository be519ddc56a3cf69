"""Regression for issue 9 flaw 1: Neighbour Discovery injection through the server's ping-test path.

miredo-server (and our server before the fix) sent any ICMPv6 of at most 88 bytes from a Teredo
source to native IPv6 as it came, hop limit included.  A single spoofed datagram therefore made the
server emit a hop-limit-255 Neighbor Advertisement on its own IPv6 link.  Now only ICMPv6 Echo
Requests leave on the native side, never with hop limit 255.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.proto.addr import build_teredo, ipv6_pack, mapping_of
from engine.proto.server import MAX_NATIVE_HOP_LIMIT, ServerRole
from engine.proto.wire import build_icmpv6, echo_request, parse_datagram

PRIMARY = "203.0.113.10"
SECONDARY = "203.0.113.11"

# The exact datagram of the issue: from 2001:0:cb00:710a:0:5eed:39ed:b2f8 to 2001:db8:1::1,
# hop limit 255, a Neighbor Advertisement for 2001:db8:1::10 with target link-layer address
# 02:00:de:ad:be:ef.
ISSUE_NA = bytes.fromhex(
    "6000000000203aff20010000cb00710a00005eed39edb2f820010db80001000000000000000000018800b2a1"
    "2000000020010db800010000000000000000001002010200deadbeef"
)

CLIENT_MAP = ("198.51.100.7", 40000)
CLIENT = build_teredo(0x20010000, PRIMARY, 0, 40000, "198.51.100.7")
ROUTER = ipv6_pack("2001:db8:1::1")
VICTIM = ipv6_pack("2001:db8:1::10")


def server() -> ServerRole:
    return ServerRole(PRIMARY, SECONDARY, now=0.0)


def feed(s: ServerRole, data: bytes, src: tuple[str, int], now: float = 1.0) -> list[bytes]:
    s.receive_datagram(data, src, 0, now)
    raw = list(s.raw6_out)
    s.raw6_out.clear()
    s.udp_out.clear()
    return raw


def test_the_issues_neighbor_advertisement_is_not_sent_to_the_link():
    s = server()
    src = mapping_of(parse_datagram(ISSUE_NA).ipv6[8:24])  # S5 holds: the spoofer picks both
    assert feed(s, ISSUE_NA, src) == []
    assert dict(s.counters.drops) == {"a5_not_echo_request": 1}
    assert s.counters.raw6_out_packets == 0


@pytest.mark.parametrize(
    "icmp_type, body",
    [
        (135, bytes(4) + VICTIM + bytes([1, 1, 2, 0, 0xDE, 0xAD, 0xBE, 0xEF])),  # NS
        (136, bytes([0x20, 0, 0, 0]) + VICTIM + bytes([2, 1, 2, 0, 0xDE, 0xAD, 0xBE, 0xEF])),
        (137, bytes(4) + VICTIM + VICTIM),  # Redirect
        (134, bytes(12)),  # Router Advertisement
        (133, bytes(4)),  # Router Solicitation to a native address
        (129, bytes(4)),  # Echo Reply: no ping test sends one
        (1, bytes(4)),  # Destination Unreachable
        (143, bytes(4)),  # MLDv2 report
    ],
)
def test_only_echo_requests_reach_native_ipv6(icmp_type, body):
    s = server()
    pkt = build_icmpv6(CLIENT, ROUTER, icmp_type, 0, body, hop_limit=255)
    assert feed(s, pkt, CLIENT_MAP) == []
    assert dict(s.counters.drops) == {"a5_not_echo_request": 1}


def test_a_bubble_to_native_ipv6_is_not_sent():
    from engine.proto.wire import bubble

    s = server()
    assert feed(s, bubble(CLIENT, ROUTER), CLIENT_MAP) == []
    assert dict(s.counters.drops) == {"a5_not_echo_request": 1}


def test_a_ping_test_still_goes_out_with_hop_limit_below_255():
    s = server()
    ping = echo_request(CLIENT, ROUTER, 7, 1, b"", hop_limit=255)
    (out,) = feed(s, ping, CLIENT_MAP)
    assert out[7] == MAX_NATIVE_HOP_LIMIT
    assert out[:7] == ping[:7] and out[8:] == ping[8:]  # the checksum does not cover it
    normal = echo_request(CLIENT, ROUTER, 7, 2, b"")
    assert feed(s, normal, CLIENT_MAP) == [normal]


@settings(max_examples=400, deadline=None)
@given(
    icmp_type=st.integers(0, 255),
    code=st.integers(0, 255),
    hop=st.integers(0, 255),
    body=st.binary(max_size=80),
)
def test_nothing_but_an_echo_request_below_hop_limit_255_ever_leaves(icmp_type, code, hop, body):
    s = server()
    pkt = build_icmpv6(CLIENT, ROUTER, icmp_type, code, body, hop_limit=hop)
    for out in feed(s, pkt, CLIENT_MAP):
        assert out[6] == 58 and out[40] == 128 and out[41] == 0
        assert out[7] <= MAX_NATIVE_HOP_LIMIT
