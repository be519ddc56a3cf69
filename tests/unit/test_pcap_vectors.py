"""Every Teredo datagram Debian's miredo put on the wire in the lab, read by our parser.

The payloads and the expected fields (tshark's independent decode) were copied once into
tests/vectors/lab_pcaps.txt; see the header of that file. Beyond matching tshark, each kind of
packet is rebuilt with our builders and must come out byte for byte as miredo sent it.
"""

import ipaddress
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.proto.addr import (
    ALL_ROUTERS,
    LL_CLIENT,
    TEREDO_PORT,
    TEREDO_PREFIX,
    has_prefix,
    is_link_local6,
    mapping_of,
    server_link_local,
    server_of,
)
from engine.proto.wire import (
    Origin,
    accept_router_advertisement,
    bubble,
    build_datagram,
    echo_reply,
    echo_request,
    icmpv6_checksum_ok,
    ipv6_dst,
    ipv6_flow,
    ipv6_hop_limit,
    ipv6_next_header,
    ipv6_ok,
    ipv6_plen,
    ipv6_src,
    ipv6_tclass,
    is_bubble,
    parse_datagram,
    parse_echo,
    router_advertisement,
    router_solicitation,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "lab_pcaps.txt"
SERVER = "203.0.113.10"
RELAY = ("203.0.113.20", 3545)
CLIENT1 = ipaddress.IPv6Address("2001:0:cb00:710a:c9:3c53:39cc:9bfe").packed


@dataclass(frozen=True)
class Frame:
    tag: str
    src: tuple[str, int]
    dst: tuple[str, int]
    expect: dict[str, str]
    data: bytes


def _endpoint(text: str) -> tuple[str, int]:
    ip, port = text.rsplit(":", 1)
    return ip, int(port)


def load_frames() -> list[Frame]:
    frames = []
    for lineno, line in enumerate(VECTORS.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            expect = dict(p.split("=", 1) for p in parts[3:-1])
            frames.append(
                Frame(parts[0], _endpoint(parts[1]), _endpoint(parts[2]), expect,
                      bytes.fromhex(parts[-1]))
            )
        except ValueError as e:
            raise AssertionError(f"{VECTORS}:{lineno}: malformed vector line: {e}") from None
    return frames


FRAMES = load_frames()


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def test_vectors_cover_every_kind_of_datagram():
    assert len(FRAMES) == 60
    kinds = Counter(kind(f) for f in FRAMES)
    assert kinds["rs"] == 1 and kinds["ra"] == 1
    assert kinds["indirect_bubble"] >= 4  # server -> client, with origin
    assert kinds["bubble"] >= 8
    assert kinds["ping_test"] >= 3 and kinds["ping_test_reply"] >= 3
    assert kinds["data"] >= 30


def kind(f: Frame) -> str:
    e = f.expect
    if e["icmp"] == "133":
        return "rs"
    if e["icmp"] == "134":
        return "ra"
    if e["nxt"] == "59":
        return "indirect_bubble" if e["origin"] != "-" else "bubble"
    if e["plen"] == "26":
        return "ping_test" if e["icmp"] == "128" else "ping_test_reply"
    return "data"


@pytest.mark.parametrize("f", FRAMES, ids=[f.tag for f in FRAMES])
def test_parse_matches_tshark(f: Frame):
    dgram = parse_datagram(f.data)
    e = f.expect
    assert dgram.trailer_len == 0 and dgram.remainder == dgram.ipv6
    assert ipv6_ok(dgram.ipv6)
    assert ipv6_src(dgram.ipv6) == v6(e["src"])
    assert ipv6_dst(dgram.ipv6) == v6(e["dst"])
    assert ipv6_next_header(dgram.ipv6) == int(e["nxt"])
    assert ipv6_plen(dgram.ipv6) == int(e["plen"])
    assert ipv6_hop_limit(dgram.ipv6) == int(e["hlim"])
    if e["origin"] == "-":
        assert dgram.origin is None
    else:
        assert dgram.origin == Origin(*_endpoint(e["origin"]))
    if e["nonce"] == "-":
        assert dgram.auth is None
    else:
        assert dgram.auth is not None and dgram.auth.nonce.hex() == e["nonce"]
        assert dgram.auth.confirmation == 0
    if e["nxt"] == "58":
        assert icmpv6_checksum_ok(dgram.ipv6)
    # Headers re-encode to exactly what miredo sent.
    assert build_datagram(dgram.ipv6, dgram.auth, dgram.origin) == f.data


@pytest.mark.parametrize("f", FRAMES, ids=[f.tag for f in FRAMES])
def test_teredo_sources_match_their_udp_mapping(f: Frame):
    """What R9(a)/S5 rely on: a Teredo source embeds the UDP endpoint it was sent from, and the
    server (A6) sends to the mapping embedded in a Teredo destination."""
    dgram = parse_datagram(f.data)
    src, dst = ipv6_src(dgram.ipv6), ipv6_dst(dgram.ipv6)
    if f.src[1] != TEREDO_PORT and has_prefix(src, TEREDO_PREFIX):
        assert mapping_of(src) == f.src
        assert server_of(src) == SERVER
    if f.src == (SERVER, TEREDO_PORT) and has_prefix(dst, TEREDO_PREFIX):
        assert mapping_of(dst) == f.dst


def test_qualification_exchange():
    rs, ra = (f for f in FRAMES if f.tag.startswith("qualify.pcap"))
    dgram = parse_datagram(rs.data)
    nonce = dgram.auth.nonce
    assert (ipv6_src(dgram.ipv6), ipv6_dst(dgram.ipv6)) == (LL_CLIENT, ALL_ROUTERS)
    assert router_solicitation(nonce) == rs.data
    assert rs.dst == (SERVER, TEREDO_PORT)

    dgram = parse_datagram(ra.data)
    assert dgram.origin == Origin(*rs.src)  # the server reports the client's mapping
    assert ipv6_src(dgram.ipv6) == server_link_local(SERVER)
    info = accept_router_advertisement(dgram, nonce, SERVER)
    assert info.prefix8 == v6("2001:0:cb00:710a::")[:8]
    assert info.mtu == 1280 and info.retrans_timer == 2000
    # The address the client then used everywhere (flags 0x00c9 drawn by miredo).
    assert info.address(0x00C9) == CLIENT1
    rebuilt = router_advertisement(nonce, dgram.origin, TEREDO_PREFIX, SERVER, 1280, LL_CLIENT)
    assert rebuilt == ra.data


@pytest.mark.parametrize(
    "f", [f for f in FRAMES if f.expect["nxt"] == "59"], ids=lambda f: f.tag
)
def test_bubbles(f: Frame):
    dgram = parse_datagram(f.data)
    p = dgram.ipv6
    assert is_bubble(p) and len(p) == 40 and ipv6_hop_limit(p) == 0
    assert bubble(ipv6_src(p), ipv6_dst(p)) == p
    # Hole-punching bubbles come from fe80::<token> with U/G cleared; answers go to the token.
    token = ipv6_src(p) if is_link_local6(ipv6_src(p)) else ipv6_dst(p)
    assert is_link_local6(token) and token[8] & 0x03 == 0
    if dgram.origin is not None:
        # Indirect bubble, leg 2: only the server adds an origin, the relay's or a client's mapping.
        assert f.src == (SERVER, TEREDO_PORT)
        assert dgram.origin == RELAY or has_prefix(ipv6_dst(p), TEREDO_PREFIX)
        assert build_datagram(p, origin=dgram.origin) == f.data


@pytest.mark.parametrize(
    "f", [f for f in FRAMES if kind(f) == "ping_test"], ids=lambda f: f.tag
)
def test_ping_tests_and_their_replies(f: Frame):
    """miredo's direct IPv6 connectivity test: echo with 18 data bytes, hlim 128, to the server;
    the native host's reply comes back through the relay carrying the same id/seq/data."""
    dgram = parse_datagram(f.data)
    assert f.dst == (SERVER, TEREDO_PORT)
    req = parse_echo(dgram.ipv6)
    assert req.type == 128 and len(req.data) == 18
    assert ipv6_flow(dgram.ipv6) == 0  # miredo's own packets carry no flow label
    pkt = dgram.ipv6
    assert echo_request(ipv6_src(pkt), ipv6_dst(pkt), req.ident, req.seq, req.data) == pkt
    pcap = f.tag.split("#")[0]
    replies = [
        parse_datagram(g.data) for g in FRAMES
        if g.tag.startswith(pcap + "#") and kind(g) == "ping_test_reply"
    ]
    assert len(replies) == 1
    r = replies[0]
    rep = parse_echo(r.ipv6)
    assert (rep.type, rep.ident, rep.seq, rep.data) == (129, req.ident, req.seq, req.data)
    assert (ipv6_src(r.ipv6), ipv6_dst(r.ipv6)) == (ipv6_dst(dgram.ipv6), ipv6_src(dgram.ipv6))
    rebuilt = echo_reply(ipv6_src(r.ipv6), ipv6_dst(r.ipv6), rep.ident, rep.seq, rep.data,
                         hop_limit=ipv6_hop_limit(r.ipv6), flow=ipv6_flow(r.ipv6))
    assert rebuilt == r.ipv6


@pytest.mark.parametrize("f", [f for f in FRAMES if kind(f) == "data"], ids=lambda f: f.tag)
def test_data_packets(f: Frame):
    dgram = parse_datagram(f.data)
    e = parse_echo(dgram.ipv6)  # the lab's data traffic is ping -s 56
    assert e.type == int(f.expect["icmp"]) and len(e.data) == 56
    build = echo_request if e.type == 128 else echo_reply
    p = dgram.ipv6
    # Linux ping sets a flow label; our builder must carry it through.
    assert ipv6_tclass(p) == 0 and ipv6_flow(p) != 0
    rebuilt = build(ipv6_src(p), ipv6_dst(p), e.ident, e.seq, e.data,
                    hop_limit=ipv6_hop_limit(p), flow=ipv6_flow(p))
    assert rebuilt == dgram.ipv6 == f.data  # data packets travel without auth/origin
