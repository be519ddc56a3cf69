"""Issue 9, amplification: how many bytes the server sends for each unauthenticated request
it answers, in UDP payload and in IP bytes (UDP payload + 28 for IPv4 and UDP headers; a
packet to native IPv6 is its own IP bytes).  docs/security.md has the table these tests pin.

RFC 4380 fixes what the server must send: an RA with the prefix option (and miredo's MTU
option) for an RS, an origin indication in front of what it relays to a client.  So the only
answer larger than its request that nobody needs is the RA to an RS without authentication
header ("bare"): no known client sends one, and it is answered only within a small budget per
source /24 unless it is padded to the size of its answer.
"""

from __future__ import annotations

import pytest

from engine.proto import wire
from engine.proto.addr import LL_CLIENT, build_teredo, ipv6_pack
from engine.proto.server import ServerLimits, ServerRole
from tests.sim.test_server import E1, E2

SRV1, SRV2 = "203.0.113.10", "203.0.113.11"
CLIENT = ("198.51.100.7", 40000)
CLIENT_ADDR = build_teredo(0x20010000, SRV1, 0, CLIENT[1], CLIENT[0])
NATIVE = ipv6_pack("2001:db8:1::100")
IP_UDP = 28


def _server(limits: ServerLimits | None = None) -> ServerRole:
    return ServerRole(SRV1, SRV2, limits=limits or ServerLimits(), now=0.0)


def _answer(s: ServerRole, data: bytes, src: tuple[str, int], now: float = 1.0):
    """(UDP payload bytes out, IP bytes out) for one request."""
    s.receive_datagram(data, src, 0, now)
    udp = sum(len(p) for _, p, _ in s.udp_out)
    ip = udp + IP_UDP * len(s.udp_out) + sum(len(p) for p in s.raw6_out)
    udp += sum(len(p) for p in s.raw6_out)  # a ping test leaves as the bare IPv6 packet
    s.udp_out.clear()
    s.raw6_out.clear()
    return udp, ip


def _factors(data: bytes, out: tuple[int, int]) -> tuple[float, float]:
    return out[0] / len(data), out[1] / (len(data) + IP_UDP)


def _bare_rs() -> bytes:
    return E1[13:]  # miredo's RS without its authentication header


def test_rs_with_authentication_gets_the_ra_rfc_4380_requires():
    s = _server()
    out = _answer(s, E1, CLIENT)
    assert out == (len(E2), len(E2) + IP_UDP) == (117, 145)
    udp, ip = _factors(E1, out)
    assert round(udp, 2) == 1.92 and round(ip, 2) == 1.63


def test_bare_rs_answer_is_217_percent_but_only_within_a_per_24_budget():
    s = _server()
    rs = _bare_rs()
    out = _answer(s, rs, CLIENT)
    udp, ip = _factors(rs, out)
    assert (len(rs), out[0]) == (48, 104)
    assert round(udp, 2) == 2.17 and round(ip, 2) == 1.74
    assert s.limits.bare_rs_per_prefix.rate == 1 and s.limits.bare_rs_per_prefix.burst == 4


def test_spoofed_bare_rs_flood_on_one_24_gets_less_back_than_it_sent():
    """Rotating spoofed sources of one victim /24, each under its per-source limit: the
    victim network got 2.17 times the flood's bytes before; now a few RAs in all."""
    s = _server()
    rs = _bare_rs()
    sent = got = answers = 0
    for i in range(2000):  # 200/s for 10 s, from 254 addresses of 198.51.100.0/24
        now = 1.0 + i * 0.005
        src = (f"198.51.100.{1 + i % 254}", 1024 + i)
        out = _answer(s, rs, src, now)
        sent += len(rs) + IP_UDP
        got += out[1]
        answers += out[0] > 0
    assert answers <= 4 + 10  # burst + 1/s for 10 s
    assert got < sent
    print(f"\nbare RS flood on a /24: {answers} answers, IP bytes out/in = {got / sent:.3f}")
    assert s.counters.drops["rs_bare_rate_limited"] == 2000 - answers
    st = s.status()["ratelimit"]["bare_rs_per_prefix"]
    assert st["keys"] == 1 and st["denied"] == 2000 - answers


def test_another_24_has_its_own_budget_and_rs_with_auth_is_not_affected():
    s = _server()
    rs = _bare_rs()
    for _ in range(10):
        _answer(s, rs, ("198.51.100.1", 1000))
    assert _answer(s, rs, ("198.51.101.1", 1000))[0] == 104
    assert _answer(s, E1, ("198.51.100.2", 1000))[0] == 117


def test_bare_rs_padded_to_its_answer_is_answered_without_the_prefix_budget():
    """RFC 4861 receivers skip unknown options: a bare RS padded (here with a 56-byte unknown
    option) to the RA's size is no amplifier, so only the ordinary RS limits apply."""
    s = _server()
    pad = bytes((200, 7)) + bytes(54)
    padded = wire.build_icmpv6(LL_CLIENT, wire.ALL_ROUTERS, 133, 0, bytes(4) + pad, 255)
    assert len(padded) >= 104
    for _ in range(20):
        out = _answer(s, padded, CLIENT)
        assert out[0] == 104
        assert _factors(padded, out)[0] <= 1.0
    assert s.counters.drops["rs_bare_rate_limited"] == 0


@pytest.mark.parametrize("trailer", [0, 100, 512])
def test_bubble_relayed_to_a_client_gains_only_the_origin_indication(trailer: int):
    """A6: what reaches a client is the request plus the 8-byte origin indication RFC 4380
    requires; it goes to the client, not back to the (spoofable) source."""
    s = _server()
    relay_token = ipv6_pack("fe80::1234:5678:9abc:def0")
    bub = wire.bubble(relay_token, CLIENT_ADDR) + b"\x00" * trailer
    out = _answer(s, bub, ("203.0.113.20", 3545))
    assert out[0] == len(bub) + 8
    udp, ip = _factors(bub, out)
    assert udp <= 1.2 and ip <= 1.12


def test_small_icmpv6_relayed_to_a_client():
    s = _server()
    src = build_teredo(0x20010000, SRV1, 0, 3545, "203.0.113.20")
    ping = wire.echo_request(src, CLIENT_ADDR, 1, 1, b"x" * 80)  # 88 bytes of ICMPv6
    out = _answer(s, ping, ("203.0.113.20", 3545))
    assert out[0] == len(ping) + 8
    assert _factors(ping, out)[0] <= 1.07


def test_ping_test_to_native_is_never_larger_than_the_request():
    s = _server()
    ping = wire.echo_request(CLIENT_ADDR, NATIVE, 1, 1, b"y" * 16)
    out = _answer(s, ping, CLIENT)
    assert out[0] == len(ping)
    udp, ip = _factors(ping, out)
    assert udp == 1.0 and ip < 1.0


def test_miredo_compatible_unlimited_mode_keeps_answering_bare_rs():
    """`ServerRateLimit off` is miredo's behaviour: no limit of any kind."""
    s = _server(ServerLimits.unlimited())
    rs = _bare_rs()
    assert all(_answer(s, rs, CLIENT)[0] == 104 for _ in range(100))


def test_server_bare_rs_limit_directive():
    from pathlib import Path

    from engine.config import ConfigError, parse_config
    from engine.proto.ratelimit import Rate

    head = "ServerBindAddress 192.0.2.1\n"
    cfg = parse_config(head + "ServerBareRSLimit 2/8\n", "s.conf", resolver=lambda h: h)
    assert ServerLimits.from_config(cfg).bare_rs_per_prefix == Rate(2, 8)
    cfg = parse_config(head + "ServerBareRSLimit off\n", "s.conf", resolver=lambda h: h)
    assert ServerLimits.from_config(cfg).bare_rs_per_prefix == Rate(None)
    with pytest.raises(ConfigError, match=r"^s\.conf:2: ServerBareRSLimit: expected RATE"):
        parse_config(head + "ServerBareRSLimit lots\n", "s.conf", resolver=lambda h: h)
    example = (Path(__file__).resolve().parents[2] / "examples" / "server.conf").read_text()
    line = next(ln for ln in example.splitlines() if ln.startswith("#ServerBareRSLimit"))
    cfg = parse_config(head + line[1:] + "\n", "s.conf", resolver=lambda h: h)
    assert ServerLimits.from_config(cfg) == ServerLimits()
