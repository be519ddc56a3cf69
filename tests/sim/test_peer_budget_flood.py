"""Issue 9, flaw 2: floods that used to grow the peer table without a byte bound.

* Any IPv6 host can make a relay create one entry (plus a queued packet) per Teredo
  destination it sends to: 100,000 destinations cost 1.3-2.5 KB each before.
* Anyone who spoofs a client's server address:3544 makes the client create one entry per
  native source, which lived 600-1200 s.

The table's accounted bytes must never exceed its budget, verified peers must keep working,
and the client's never-confirmed entries must go after `CLIENT_PENDING_LIFETIME`.
"""

from __future__ import annotations

from engine.config.model import EngineConfig
from engine.proto import wire
from engine.proto.addr import build_teredo, ipv6_pack
from engine.proto.client import ClientRole
from engine.proto.peers import CLIENT_MEMORY_LIMIT, CLIENT_PENDING_LIFETIME
from engine.proto.relay import RelayRole

SRV1 = "203.0.113.10"
NATIVE = ipv6_pack("2001:db8:1::100")
GOOD_MAP = ("198.51.100.1", 40000)
GOOD = build_teredo(0x20010000, SRV1, 0, GOOD_MAP[1], GOOD_MAP[0])


def _tokens(n: int) -> bytes:
    return bytes(range(3, 3 + n))


def _flood_dst(i: int) -> bytes:
    return build_teredo(0x20010000, SRV1, 0, 1024 + i % 60000,
                        f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}")


def _trusted_relay(limit: int) -> RelayRole:
    """A relay with one verified client: it sent to it and got its answer bubble (R9a)."""
    relay = RelayRole(relay_type="cone", token_bytes=_tokens, now=0.0, memory_limit=limit)
    relay.handle_timer(0.0)
    relay.receive_tun_packet(wire.echo_request(NATIVE, GOOD, 1, 0, b"hi"), 0.5)
    relay.receive_datagram(wire.bubble(GOOD, NATIVE), GOOD_MAP, 0, 0.6)
    assert relay.peers.get(GOOD).trusted
    relay.udp_out.clear()
    relay.tun_out.clear()
    return relay


def test_relay_flood_of_100000_destinations_stays_within_the_budget():
    limit = 4 << 20
    relay = _trusted_relay(limit)
    peers = relay.peers
    most = 0
    now = 1.0
    for i in range(100_000):
        relay.receive_tun_packet(wire.echo_request(NATIVE, _flood_dst(i), 2, i & 0xFFFF,
                                                   b"x" * 60), now)
        relay.udp_out.clear()
        assert peers.used <= limit
        most = max(most, len(peers))
        if i % 1000 == 999:  # the runtime's timers run between batches
            now += 0.05
            if relay.next_timer() <= now:
                relay.handle_timer(now)
    # the budget, not the count cap, bounded the table; the flood evicted only itself
    assert most < 10_000
    assert peers.evicted > 90_000
    assert relay.counters.drops["peer_budget_full"] == 0
    st = relay.status()["peer_memory"]
    assert st["limit"] == limit and 0 < st["bytes"] <= limit and st["evicted"] == peers.evicted
    # the verified client still gets its packets on the fast path, and its answers get through
    good = peers.get(GOOD)
    assert good is not None and good.trusted
    pkt = wire.echo_request(NATIVE, GOOD, 1, 1, b"still here")
    relay.receive_tun_packet(pkt, now)
    assert relay.udp_out == [(0, pkt, GOOD_MAP)]
    back = wire.echo_reply(GOOD, NATIVE, 1, 1, b"still here")
    relay.receive_datagram(back, GOOD_MAP, 0, now)
    assert relay.tun_out == [back]


def test_relay_refuses_new_peers_rather_than_evict_verified_ones():
    limit = 64 << 10
    relay = RelayRole(relay_type="cone", token_bytes=_tokens, now=0.0, memory_limit=limit)
    relay.handle_timer(0.0)
    verified = []
    i = 0
    while True:  # verified clients until the budget is full
        dst = _flood_dst(i)
        relay.receive_tun_packet(wire.echo_request(NATIVE, dst, 1, 0, b"q"), 1.0)
        p = relay.peers.get(dst)
        if p is None:
            break
        relay.receive_datagram(wire.bubble(dst, NATIVE), p.mapping, 0, 1.0)
        assert p.trusted
        verified.append(dst)
        i += 1
    # the refused creation, and before it perhaps the last entry's queued packet (the entry
    # fitted, its packet did not; the bubble's answer verified it all the same)
    full = relay.counters.drops["peer_budget_full"]
    assert full in (1, 2)
    for j in range(i, i + 1000):
        relay.receive_tun_packet(wire.echo_request(NATIVE, _flood_dst(j), 1, 0, b"q"), 2.0)
        assert relay.peers.used <= limit
    assert relay.counters.drops["peer_budget_full"] == full + 1000
    assert all(relay.peers.get(d).trusted for d in verified)


def _qualified_client(**kw) -> ClientRole:
    cfg = EngineConfig(role="client", relay_type="client", path="t.conf", server_address=SRV1)
    c = ClientRole.from_config(cfg, token_bytes=_tokens, randbits=lambda n: 0x1234 & ((1 << n) - 1),
                               now=0.0, **kw)
    c.handle_timer(0.0)
    rs = next(p for _, p, dst in c.udp_out if dst == (SRV1, 3544))
    nonce = wire.parse_datagram(rs).auth.nonce
    ra = wire.router_advertisement(nonce, wire.Origin("198.51.100.50", 50092), 0x20010000, SRV1,
                                   1280, ipv6_pack("fe80::ffff:ffff:ffff"))
    c.receive_datagram(ra, (SRV1, 3544), 0, 0.1)
    assert c.up
    c.udp_out.clear()
    return c


def test_spoofed_server_flood_on_a_client_is_bounded_and_short_lived():
    c = _qualified_client()
    peers = c.peers
    assert peers.memory_limit == CLIENT_MEMORY_LIMIT
    now = 1.0
    for i in range(30_000):
        src = ipv6_pack(f"2001:db8:{i >> 8 & 0xFFFF:x}::{i & 0xFF:x}")
        pkt = wire.echo_request(src, c.address, 3, i & 0xFFFF, b"z" * 100)
        c.receive_datagram(pkt, (SRV1, 3544), 0, now)  # "from the server": spoofable
        c.udp_out.clear()
        assert peers.used <= CLIENT_MEMORY_LIMIT
        if i % 1000 == 999:
            now += 0.1
    assert 0 < len(peers) < 30_000 and peers.evicted > 0
    # never-confirmed entries are gone after the pending lifetime, not after 600-1200 s
    t = now
    while t < now + CLIENT_PENDING_LIFETIME + 1:
        t = max(t + 0.01, min(c.next_timer(), now + CLIENT_PENDING_LIFETIME + 1))
        c.handle_timer(t)
    assert len(peers) == 0
    assert c.status()["peer_memory"]["expired_pending"] > 0


def test_peer_memory_limit_from_the_config_reaches_both_roles():
    cfg = EngineConfig(role="relay", relay_type="cone", path="r.conf", peer_memory_limit=8 << 20)
    assert RelayRole.from_config(cfg, token_bytes=_tokens).peers.memory_limit == 8 << 20
    cfg = EngineConfig(role="client", relay_type="client", path="c.conf", server_address=SRV1,
                       peer_memory_limit=1 << 20)
    assert ClientRole.from_config(cfg, token_bytes=_tokens).peers.memory_limit == 1 << 20
    cfg = EngineConfig(role="client", relay_type="client", path="c.conf", server_address=SRV1)
    assert ClientRole.from_config(cfg, token_bytes=_tokens).peers.memory_limit == (
        CLIENT_MEMORY_LIMIT)
