"""Relay role on the simulated network, against the real server role.

The Teredo client here is scripted byte for byte from the spec's examples (E4-E6: it answers
the server-relayed indirect bubble with a bubble to the origin, as a miredo client does), so
these tests pin the relay's own behaviour; the client role is exercised end to end in
``test_client_paths.py``.
"""

from __future__ import annotations

from engine.proto.addr import build_teredo, mapping_of
from engine.proto.relay import RelayRole
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.wire import bubble, build_ipv6, echo_request, parse_datagram
from tests.sim.simnet import SimNet, UdpProbe

SRV1, SRV2 = "203.0.113.10", "203.0.113.11"
RELAY_IP = "203.0.113.20"
NATIVE = bytes.fromhex("20010db8000100000000000000000001")


def _net(relay_type: str = "cone", nat_kind: str = "port_restricted"):
    net = SimNet(seed=3, trace=True)
    server = ServerRole(SRV1, SRV2, limits=ServerLimits.unlimited(), now=net.now)
    net.attach(server, net.add_host(SRV1, SRV2), {0: (SRV1, 3544), 1: (SRV2, 3544)})
    relay = RelayRole(relay_type=relay_type, token_bytes=lambda n: bytes(range(7, 7 + n)),
                      now=net.now)
    ratt = net.attach(relay, net.add_host(RELAY_IP), {0: 3545}, tun="native")
    net.ipv6.add_route(bytes.fromhex("20010000"), 32, ratt)
    host = net.ipv6.add_host(NATIVE)
    nat = net.add_nat(nat_kind, "198.51.100.1")
    client = UdpProbe()
    catt = net.attach(client, net.add_host("198.18.0.2", realm=nat))
    # the client's NAT mapping towards its server (what qualification would have created)
    client.send(b"\x60" + bytes(39), (SRV1, 3544))
    net.run_for(0.1)
    ip, port = catt.public_address(0, (SRV1, 3544))
    addr = build_teredo(0x20010000, SRV1, 0x1234, port, ip)
    return net, relay, ratt, host, client, catt, addr


def _answer_indirect(net, client):
    """What a miredo client does with an indirect bubble from its server: E6."""
    for data, src, _, _ in list(client.received):
        t = parse_datagram(data)
        if src == (SRV1, 3544) and t.origin is not None and t.ipv6[6] == 59:
            pkt = t.ipv6
            client.send(bubble(pkt[24:40], pkt[8:24]), tuple(t.origin))
    client.received.clear()
    net.run_for(0.1)


def test_native_to_client_cold_then_warm():
    net, relay, _ratt, host, client, _catt, addr = _net()
    pkts = [echo_request(NATIVE, addr, 7, i, b"x" * 10) for i in range(3)]
    for p in pkts:
        net.ipv6.send(p)
    net.run_for(0.1)
    # cold: queued, one indirect bubble via the server (cone relay: no direct bubble)
    assert relay.counters.udp_out_packets == 1
    got = client.received
    assert len(got) == 1 and got[0][1] == (SRV1, 3544)
    t = parse_datagram(got[0][0])
    assert t.origin is not None and t.ipv6[6] == 59
    assert t.ipv6[8:16] == bytes.fromhex("fe80000000000000")  # token source
    assert t.ipv6[24:40] == addr
    _answer_indirect(net, client)
    # trusted: the queue is flushed in order, from the relay's port
    data = [d for d, src, _, _ in client.received if src[1] == 3545]
    assert data == pkts  # FIFO, hop limit untouched
    assert relay.peers.get(addr).trusted
    # warm: straight through
    client.received.clear()
    net.ipv6.send(pkts[0])
    net.run_for(0.1)
    assert [d for d, _, _, _ in client.received] == [pkts[0]]
    # and back: the client's reply reaches the native host
    reply = echo_request(addr, NATIVE, 8, 1, b"y")
    client.send(reply, (RELAY_IP, 3545))
    net.run_for(0.1)
    assert host.received[-1][1] == reply


def test_restricted_relay_sends_direct_and_indirect_bubble():
    net, _relay, _ratt, _host, client, _catt, addr = _net("restricted", nat_kind="full_cone")
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b"x"))
    net.run_for(0.1)
    sources = sorted(src for _, src, _, _ in client.received)
    assert sources == sorted([(SRV1, 3544), (RELAY_IP, 3545)])


def test_relay_drops_unknown_and_spoofed_sources():
    net, relay, _ratt, host, client, _catt, addr = _net()
    # unknown Teredo peer, even from its own mapping: not forwarded, only verified (a bubble
    # through its server; issue 9 flaw 9, tests/sim/test_relay_restart.py)
    client.send(echo_request(addr, NATIVE, 1, 1, b"z"), (RELAY_IP, 3545))
    # a native IPv6 source over UDP
    net.inject(build_ipv6(NATIVE, addr, 59, b""), ("198.51.100.99", 1234), (RELAY_IP, 3545))
    net.run_for(0.1)
    assert relay.verify_attempts == 1 and not relay.peers.get(addr).trusted
    assert relay.counters.drops["rx_src_not_teredo"] == 1
    assert host.received == []
    # now make the client trusted, then spoof its address from another mapping
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b"x"))
    net.run_for(0.1)
    _answer_indirect(net, client)
    net.inject(echo_request(addr, NATIVE, 1, 2, b"spoof"), ("198.51.100.66", 999),
               (RELAY_IP, 3545))
    net.run_for(0.1)
    assert relay.counters.drops["rx_mapping_mismatch"] == 1
    assert all(b"spoof" not in p for _, p in host.received)


def test_symmetric_nat_client_trusted_through_bubble_token():
    """R9d: the answer comes from another NAT port than the one in the client's address."""
    net, relay, _ratt, _host, client, catt, addr = _net(nat_kind="symmetric")
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b"x"))
    net.run_for(0.1)
    _answer_indirect(net, client)
    public = catt.public_address(0, (RELAY_IP, 3545))
    assert public != mapping_of(addr)
    p = relay.peers.get(addr)
    assert p.trusted and p.mapping == public
    assert [src for _, src, _, _ in client.received] == [(RELAY_IP, 3545)]


def test_non_teredo_destination_gets_icmp_and_hop_limit_untouched():
    net, relay, _ratt, _host, _client, _catt, _addr = _net()
    other = bytes.fromhex("20010db8000200000000000000000009")
    relay.receive_tun_packet(build_ipv6(NATIVE, other, 17, b"abc", hop_limit=5), net.now)
    assert relay.counters.drops["tun_dst_not_teredo"] == 1
    err = relay.tun_out[-1]
    assert err[6] == 58 and err[40] == 1 and err[41] == 3 and err[24:40] == NATIVE


def test_teredo_destination_with_non_global_server_is_dropped_without_a_peer():
    net, relay, _ratt, _host, _client, _catt, _addr = _net()
    for server in ("0.0.0.0", "10.1.2.3", "192.168.0.1", "224.0.0.1"):
        dst = build_teredo(0x20010000, server, 0, 40000, "198.51.100.1")
        relay.receive_tun_packet(build_ipv6(NATIVE, dst, 17, b"abc"), net.now)
    assert relay.counters.drops["tun_dst_server_not_global"] == 4
    assert len(relay.peers) == 0 and relay.udp_out == []


def test_relay_status_reports_peers_and_drops():
    net, relay, _ratt, _host, client, _catt, addr = _net()
    net.ipv6.send(echo_request(NATIVE, addr, 7, 1, b"x"))
    net.run_for(0.1)
    st = relay.status()
    assert st["relay_type"] == "cone" and st["prefix"] == "2001::/32"
    assert st["peers"] == {"count": 1, "trusted": 0}
    _answer_indirect(net, client)
    assert relay.status()["peers"] == {"count": 1, "trusted": 1}
