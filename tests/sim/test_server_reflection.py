"""Issue 9 flaw 3: the server as a reflector towards one victim.

A bubble addressed to a Teredo address of this server is forwarded, origin indication and up to
`MAX_RELAYED_TRAILER` trailer bytes included, to the ip:port written in that address.  The
per-source buckets are keyed by the (spoofable) UDP source, so 15,000 datagrams from rotating
spoofed sources all reached one victim.  A bucket per destination IPv4 caps that.
"""

from __future__ import annotations

import pytest

from engine.config import parse_config
from engine.proto.addr import build_teredo
from engine.proto.ratelimit import Rate
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.wire import bubble

PRIMARY, SECONDARY = "192.0.2.1", "192.0.2.2"
VICTIM = build_teredo(0x20010000, PRIMARY, 0, 53, "198.51.100.53")  # a DNS server's port
TRAILER = b"\x00" * 512


def sources(n: int):
    """Rotating spoofed global sources, each with a Teredo address that matches it (S5)."""
    for i in range(n):
        ip = f"203.0.113.{1 + i % 200}"
        port = 1024 + i
        yield (ip, port), bubble(build_teredo(0x20010000, PRIMARY, 0, port, ip), VICTIM)


def flood(s: ServerRole, n: int, now: float) -> int:
    arrived = 0
    for src, pkt in sources(n):
        s.receive_datagram(pkt + TRAILER, src, 0, now)
        arrived += sum(1 for _, _, dst in s.udp_out if dst == ("198.51.100.53", 53))
        s.udp_out.clear()
    return arrived


def test_rotating_spoofed_sources_get_one_destinations_budget_only():
    s = ServerRole(PRIMARY, SECONDARY, now=0.0)
    limit = ServerLimits().forward_per_destination
    assert flood(s, 15000, now=1.0) == limit.burst
    assert s.counters.drops["forward_destination_rate_limited"] == 15000 - limit.burst
    # a second later the bucket has refilled by `rate`, no more
    assert flood(s, 1000, now=2.0) == limit.rate
    st = s.status()["ratelimit"]["forward_per_destination"]
    assert st["keys"] == 1 and st["denied"] == 15000 + 1000 - limit.burst - limit.rate


def test_other_destinations_are_not_affected():
    s = ServerRole(PRIMARY, SECONDARY, now=0.0)
    flood(s, 2000, now=1.0)
    other = build_teredo(0x20010000, PRIMARY, 0, 40000, "198.51.100.7")
    s.receive_datagram(bubble(build_teredo(0x20010000, PRIMARY, 0, 9, "203.0.113.250"), other),
                       ("203.0.113.250", 9), 0, 1.0)
    assert [dst for _, _, dst in s.udp_out] == [("198.51.100.7", 40000)]


def test_unlimited_is_miredos_behaviour():
    s = ServerRole(PRIMARY, SECONDARY, now=0.0, limits=ServerLimits.unlimited())
    assert flood(s, 3000, now=1.0) == 3000


@pytest.mark.parametrize("text, expect", [
    ("ServerForwardDestinationRate 10/20", Rate(10, 20)),
    ("ServerForwardDestinationRate off", Rate(None)),
])
def test_the_directive_sets_the_limit(text, expect):
    cfg = parse_config(f"ServerBindAddress 192.0.2.1\n{text}\n", "s.conf")
    assert ServerLimits.from_config(cfg).forward_per_destination == expect
