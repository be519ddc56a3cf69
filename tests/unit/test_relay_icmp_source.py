"""Where a relay's ICMPv6 errors come from (spec §5.9): one of the host's global addresses.

The rtnetlink decoding (`relay_link.ifaddr_events`, `rtnl_min`'s parser) is fed hand-built
messages (the kernel test `test_relay_errors.py` runs it against a real kernel); the role's
choice is checked on the packets it writes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from engine.proto.addr import LL_CLIENT
from engine.proto.relay import RelayRole, closest_source
from engine.proto.wire import build_ipv6, icmpv6_checksum_ok
from engine.runtime.relay_link import (
    IFA_F_DEPRECATED,
    IFA_F_TEMPORARY,
    IFA_F_TENTATIVE,
    RTM_DELADDR,
    RTM_NEWADDR,
    apply_ifaddr,
    ifaddr_events,
    usable_sources,
)


def parse_ifaddr(data: bytes):
    """`ifaddr_events` of one raw netlink read, as the watcher decodes it; a message that does
    not decode ends the read."""
    return ifaddr_events(data)[0]


def tuples(events):
    return [(a.type, a.index, a.scope, a.flags, a.address) for a in events]


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def rtattr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def ifaddr_msg(mtype: int, index: int, address: str, *, scope: int = 0, flags: int = 0,
               family: int = socket.AF_INET6, ifa_flags: int | None = None) -> bytes:
    body = struct.pack("=BBBBI", family, 64, flags & 0xFF, scope, index)
    packed = (ipaddress.IPv6Address(address).packed if family == socket.AF_INET6
              else ipaddress.IPv4Address(address).packed)
    body += rtattr(1, packed)  # IFA_ADDRESS
    if ifa_flags is not None:
        body += rtattr(8, struct.pack("=I", ifa_flags))  # IFA_FLAGS
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 1, 0) + body


def test_parse_ifaddr_reads_ipv6_messages_and_skips_the_rest():
    data = (ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::20")
            + ifaddr_msg(RTM_NEWADDR, 2, "198.51.100.1", family=socket.AF_INET)
            + struct.pack("=IHHII", 20, 16, 0, 1, 0) + bytes(4)  # a RTM_NEWLINK
            + ifaddr_msg(RTM_DELADDR, 3, "2001:db8:2::1", ifa_flags=IFA_F_DEPRECATED << 8 | 0x20))
    got = tuples(parse_ifaddr(data))
    assert got == [(RTM_NEWADDR, 2, 0, 0, a6("2001:db8:1::20")),
                   (RTM_DELADDR, 3, 0, IFA_F_DEPRECATED << 8 | 0x20, a6("2001:db8:2::1"))]


def test_parse_ifaddr_stops_at_a_truncated_message():
    good = ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::20")
    assert ifaddr_events(good)[1] is True
    events, whole = ifaddr_events(good + good[:30])
    assert len(events) == 1 and not whole  # the watcher then reads the whole table again
    assert list(parse_ifaddr(struct.pack("=IHHII", 8, 20, 0, 0, 0))) == []
    assert list(parse_ifaddr(good[:20])) == []
    assert ifaddr_events(good[:20])[1] is False
    bad_attr = bytearray(good)
    bad_attr[24:26] = struct.pack("=H", 200)  # an attribute longer than its message
    assert ifaddr_events(bytes(bad_attr)) == ([], False)


def test_usable_sources_tiers():
    table: dict = {}
    apply_ifaddr(table, parse_ifaddr(b"".join([
        ifaddr_msg(RTM_NEWADDR, 1, "::1", scope=254),
        ifaddr_msg(RTM_NEWADDR, 2, "fe80::1", scope=253),
        ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::20"),
        ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::99", flags=IFA_F_TENTATIVE),
        ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::55", flags=IFA_F_DEPRECATED),
        ifaddr_msg(RTM_NEWADDR, 2, "2001:db8:1::77", flags=IFA_F_TEMPORARY),
        ifaddr_msg(RTM_NEWADDR, 9, "2001:db8:9::1"),  # on our own TUN
        ifaddr_msg(RTM_NEWADDR, 3, "fd00::2"),
    ])))
    assert usable_sources(table, own_index=9) == [a6("2001:db8:1::20"), a6("2001:db8:1::77"),
                                                    a6("fd00::2")]
    apply_ifaddr(table, parse_ifaddr(b"".join(
        ifaddr_msg(RTM_DELADDR, i, a)
        for i, a in ((2, "2001:db8:1::20"), (2, "2001:db8:1::77"), (3, "fd00::2")))))
    # only a deprecated address left: better than a link-local one
    assert usable_sources(table, own_index=9) == [a6("2001:db8:1::55")]
    apply_ifaddr(table, parse_ifaddr(ifaddr_msg(RTM_DELADDR, 2, "2001:db8:1::55")))
    assert usable_sources(table, own_index=9) == []


def test_closest_source_is_the_longest_prefix_match():
    srcs = [a6("2001:db8:1::20"), a6("2001:db8:2::20"), a6("fd00::1")]
    assert closest_source(srcs, a6("2001:db8:2::100")) == a6("2001:db8:2::20")
    assert closest_source(srcs, a6("fd00:1::5")) == a6("fd00::1")
    assert closest_source(srcs, a6("2a00::1")) == a6("2001:db8:1::20")  # tie: the first


def _error_source(relay: RelayRole, sender: str) -> bytes:
    pkt = build_ipv6(a6(sender), a6("2001:db8:ff::1"), 17, b"abcd")  # not Teredo: T3
    relay.tun_out.clear()
    relay.receive_tun_packet(pkt, 1.0)
    (err,) = relay.tun_out
    assert err[40] == 1 and err[41] == 3 and err[24:40] == a6(sender)
    assert icmpv6_checksum_ok(err)
    return err[8:24]


def test_relay_errors_use_the_host_address_closest_to_the_sender():
    relay = RelayRole(relay_type="cone", token_bytes=bytes)
    assert _error_source(relay, "2001:db8:1::100") == LL_CLIENT  # nothing known yet
    relay.set_icmp_sources([a6("2001:db8:1::20"), a6("2001:db8:2::20")])
    assert _error_source(relay, "2001:db8:1::100") == a6("2001:db8:1::20")
    assert _error_source(relay, "2001:db8:2::100") == a6("2001:db8:2::20")
    assert relay.status()["icmp_sources"] == ["2001:db8:1::20", "2001:db8:2::20"]
    relay.set_icmp_sources([])
    assert _error_source(relay, "2001:db8:2::100") == LL_CLIENT
