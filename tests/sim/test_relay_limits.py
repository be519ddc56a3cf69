"""Relay rate limits and timers on the simulated network (spec §5.3-§5.5, §5.9): at most 4
bubbles >2 s apart then a 300 s block, the 1280-byte queue, the ICMPv6 error budget, a trusted
peer going stale after 30 s, and the two-generation expiry."""

from __future__ import annotations

from engine.proto.wire import build_ipv6, echo_request
from tests.sim.test_relay import NATIVE, _answer_indirect, _net


def _bubbles_seen(client) -> int:
    n = len(client.received)
    client.received.clear()
    return n


def test_four_bubbles_then_blocked_for_300_seconds():
    net, relay, _r, _h, client, _c, addr = _net()
    start = int(net.now)
    sent = []
    for s in range(0, 16):
        net.run_until(start + s + 0.5)
        net.ipv6.send(echo_request(NATIVE, addr, 7, s, b""))
        net.run_for(0.1)
        if _bubbles_seen(client):
            sent.append(s)
    assert sent == [0, 3, 6, 9]  # > 2 whole seconds apart, 4 at most
    # NEVER: every further packet gets an ICMPv6 address unreachable
    assert relay.counters.drops["bubble_limit"] >= 1
    errs = [p for _, p in net.ipv6.log if p[6] == 58 and p[40] == 1 and p[41] == 3]
    assert errs and all(p[24:40] == NATIVE for p in errs)


def test_block_released_after_300_seconds():
    """Driven directly (no GC timer): the entry is kept by the lookups themselves."""
    net, relay, *_, addr = _net()
    t0 = int(net.now) + 1
    for s in (0, 3, 6, 9):
        relay.receive_tun_packet(echo_request(NATIVE, addr, 7, s, b""), t0 + s + 0.5)
    p = relay.peers.get(addr)
    assert p.bubbles == 4
    n = relay.counters.udp_out_packets
    relay.receive_tun_packet(echo_request(NATIVE, addr, 7, 1, b""), t0 + 9 + 300 + 0.5)
    assert relay.counters.udp_out_packets == n
    relay.receive_tun_packet(echo_request(NATIVE, addr, 7, 2, b""), t0 + 9 + 301 + 0.5)
    assert relay.counters.udp_out_packets == n + 1 and p.bubbles == 1


def test_queue_overflow_is_dropped_and_counted():
    net, relay, _r, _h, client, _c, addr = _net()
    big = [build_ipv6(NATIVE, addr, 17, bytes([i]) * 560) for i in range(3)]  # 600 bytes each
    for pkt in big:
        net.ipv6.send(pkt)
    net.run_for(0.1)
    assert relay.counters.drops["queue_full"] == 1
    _answer_indirect(net, client)
    assert [d for d, src, _, _ in client.received if src[1] == 3545] == big[:2]


def test_icmp_error_budget_is_10_per_second():
    net, relay, *_ = _net()
    other = bytes.fromhex("20010db8000200000000000000000009")
    t = int(net.now) + 1.0
    for i in range(25):
        relay.receive_tun_packet(build_ipv6(NATIVE, other, 17, bytes([i])), t + 0.01 * i)
    assert len(relay.tun_out) == 10
    assert relay.counters.drops["icmp_rate_limited"] == 15
    relay.receive_tun_packet(build_ipv6(NATIVE, other, 17, b"n"), t + 1.0)
    assert len(relay.tun_out) == 11
    # never an error about an ICMPv6 error or to a multicast source
    relay.receive_tun_packet(build_ipv6(NATIVE, other, 58, bytes([1, 3, 0, 0]) + bytes(4)), t + 2)
    relay.receive_tun_packet(build_ipv6(bytes.fromhex("ff02" + "00" * 13 + "01"), other, 17, b""),
                       t + 2)
    assert len(relay.tun_out) == 11


def test_trusted_peer_goes_stale_after_30_seconds():
    net, relay, _r, _h, client, _c, addr = _net()
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b""))
    net.run_for(0.1)
    _answer_indirect(net, client)
    client.received.clear()
    last_rx = relay.peers.get(addr).last_rx
    net.run_until(last_rx + 30 + 0.5)  # within 30 s: still direct
    net.ipv6.send(echo_request(NATIVE, addr, 7, 2, b""))
    net.run_for(0.1)
    assert [s for _, s, _, _ in client.received] == [("203.0.113.20", 3545)]
    client.received.clear()
    net.run_until(last_rx + 31 + 0.5)  # stale: back through T8 (queue + indirect bubble)
    pkt = echo_request(NATIVE, addr, 7, 3, b"")
    net.ipv6.send(pkt)
    net.run_for(0.1)
    assert [s for _, s, _, _ in client.received] == [("203.0.113.10", 3544)]
    _answer_indirect(net, client)
    assert [d for d, _, _, _ in client.received] == [pkt]


def test_idle_peer_expires_between_e_and_2e():
    net, relay, *_, addr = _net()
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b""))
    net.run_for(0.1)
    assert len(relay.peers) == 1
    net.run_for(30)
    assert len(relay.peers) == 1  # moved to the old generation
    net.run_for(31)
    assert len(relay.peers) == 0
