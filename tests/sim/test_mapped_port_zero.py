"""Issue 9, flaw 5: nothing is ever queued for sending to UDP port 0.

No NAT maps port 0 and the kernel refuses ``sendto(..., (ip, 0))``, so such a datagram used to
reach the runtime and be counted as ``udp_send_error``.  The protocol core now drops it where it
first sees the port 0 (a Teredo destination's embedded port, a UDP source, an origin
indication) and counts it under its own reason.
"""

from __future__ import annotations

from engine.config.model import EngineConfig
from engine.proto import wire
from engine.proto.addr import build_teredo, ipv6_pack
from engine.proto.client import ClientRole
from engine.proto.relay import RelayRole
from engine.proto.server import ServerLimits, ServerRole

SRV1, SRV2 = "203.0.113.10", "203.0.113.11"
CLIENT_MAP = ("198.51.100.1", 50092)
PEER_IP = "198.51.100.7"
NATIVE = ipv6_pack("2001:db8:1::100")
PORT0_DST = build_teredo(0x20010000, SRV1, 0, 0, PEER_IP)


def _tokens(n: int) -> bytes:
    return bytes(range(1, n + 1))


def _no_port_zero(role) -> None:
    bad = [dst for _, _, dst in role.udp_out if dst[1] == 0]
    assert not bad, f"datagrams queued for port 0: {bad}"


def _qualified_client() -> ClientRole:
    cfg = EngineConfig(role="client", relay_type="client", path="t.conf", server_address=SRV1)
    c = ClientRole.from_config(cfg, token_bytes=_tokens, randbits=lambda n: 0x1234 & ((1 << n) - 1),
                               now=0.0)
    c.handle_timer(0.0)
    rs = next(p for _, p, dst in c.udp_out if dst == (SRV1, 3544))
    nonce = wire.parse_datagram(rs).auth.nonce
    ra = wire.router_advertisement(nonce, wire.Origin(*CLIENT_MAP), 0x20010000, SRV1, 1280,
                                   ipv6_pack("fe80::ffff:ffff:ffff"))
    c.receive_datagram(ra, (SRV1, 3544), 0, 0.1)
    assert c.up
    c.udp_out.clear()
    c.tun_out.clear()
    return c


def test_relay_drops_tun_packet_to_teredo_port_zero():
    relay = RelayRole(relay_type="restricted", token_bytes=_tokens, now=0.0)
    relay.receive_tun_packet(wire.echo_request(NATIVE, PORT0_DST, 1, 1, b"x" * 8), 1.0)
    _no_port_zero(relay)
    assert relay.udp_out == []  # not even the indirect bubble: the peer is unreachable
    assert relay.counters.drops["mapped_port_zero"] == 1
    assert len(relay.peers) == 0


def test_client_drops_tun_packet_to_teredo_port_zero():
    c = _qualified_client()
    c.receive_tun_packet(wire.echo_request(c.address, PORT0_DST, 1, 1, b"x" * 8), 1.0)
    _no_port_zero(c)
    assert c.counters.drops["mapped_port_zero"] == 1
    assert len(c.peers) == 0


def test_client_never_trusts_a_port_zero_source():
    """A Teredo source embedding (ip, 0) sent from (ip, 0) passes R9(a); the answer would go
    to port 0."""
    c = _qualified_client()
    pkt = wire.echo_request(PORT0_DST, c.address, 1, 1, b"x" * 8)
    c.receive_datagram(pkt, (PEER_IP, 0), 0, 1.0)
    assert c.peers.get(PORT0_DST) is None
    assert c.tun_out == []
    assert c.counters.drops["mapped_port_zero"] == 1
    c.receive_tun_packet(wire.echo_reply(c.address, PORT0_DST, 1, 1, b"x" * 8), 1.5)
    _no_port_zero(c)


def test_client_drops_server_bubble_with_origin_port_zero():
    c = _qualified_client()
    b = wire.bubble(build_teredo(0x20010000, SRV1, 0, 4000, PEER_IP), c.address)
    c.receive_datagram(wire.build_datagram(b, origin=wire.Origin(PEER_IP, 0)), (SRV1, 3544), 0,
                       1.0)
    _no_port_zero(c)
    assert c.counters.drops["mapped_port_zero"] == 1


def _server() -> ServerRole:
    return ServerRole(SRV1, SRV2, limits=ServerLimits.unlimited(), now=0.0)


def test_server_does_not_answer_port_zero_source():
    s = _server()
    s.receive_datagram(wire.router_solicitation(b"\x01" * 8), (PEER_IP, 0), 0, 1.0)
    _no_port_zero(s)
    assert s.udp_out == []
    assert s.counters.drops["s3_source_port_zero"] == 1


def test_server_does_not_forward_to_port_zero_client():
    s = _server()
    to_port0 = build_teredo(0x20010000, SRV1, 0, 0, "198.51.100.9")
    src_map = ("198.51.100.20", 3545)
    b = wire.bubble(build_teredo(0x20010000, SRV1, 0, src_map[1], src_map[0]), to_port0)
    s.receive_datagram(b, src_map, 0, 1.0)
    _no_port_zero(s)
    assert s.udp_out == []
    assert s.counters.drops["a6_mapped_port_zero"] == 1
