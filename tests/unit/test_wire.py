"""Wire formats: the spec's byte-exact examples E1-E8, miredo's parser rules, RA checks, ICMPv6."""

import ipaddress
import re
from pathlib import Path

import pytest

from engine.proto.addr import (
    ALL_ROUTERS,
    LL_CLIENT,
    LL_CONE,
    TEREDO_PREFIX,
    build_teredo,
    server_link_local,
)
from engine.proto.errors import ParseError
from engine.proto.wire import (
    Auth,
    Origin,
    Teredo,
    accept_router_advertisement,
    bubble,
    build_datagram,
    build_icmpv6,
    build_ipv6,
    dest_unreachable,
    echo_reply,
    echo_request,
    icmp_error_allowed,
    icmpv6_checksum,
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
    packet_too_big,
    parse_datagram,
    parse_echo,
    parse_icmpv6,
    parse_router_advertisement,
    router_advertisement,
    router_solicitation,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spec_examples.txt"


def load_spec_examples() -> dict[str, tuple[tuple[str, int], tuple[str, int], bytes]]:
    """Blocks '## <name> <src ip:port> <dst ip:port> ...' followed by hexdump lines."""
    out = {}
    name = None
    for lineno, line in enumerate(VECTORS.read_text().splitlines(), 1):
        if line.startswith("## "):
            name, src, dst = line[3:].split()[:3]
            s_ip, s_port = src.rsplit(":", 1)
            d_ip, d_port = dst.rsplit(":", 1)
            out[name] = ((s_ip, int(s_port)), (d_ip, int(d_port)), b"")
        elif re.match(r"[0-9a-f]{4}  ", line):
            assert name is not None, f"{VECTORS}:{lineno}: hex before a block header"
            s, d, data = out[name]
            out[name] = (s, d, data + bytes.fromhex(line[6:]))
    return out


EX = load_spec_examples()


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


NONCE = bytes.fromhex("a1b2c3d4e5f60718")
SERVER = "192.0.2.1"
CLIENT = build_teredo(TEREDO_PREFIX, SERVER, 0x2C5A, 40000, "198.51.100.7")
PEER = build_teredo(TEREDO_PREFIX, SERVER, 0x0413, 50000, "203.0.113.9")
RELAY_TOKEN = v6("fe80::48b1:77c2:9d0e:5a31")
NATIVE = v6("2001:db8::1")
MAPPED = Origin("198.51.100.7", 40000)


def test_all_eight_examples_loaded():
    assert sorted(EX) == [f"E{i}" for i in range(1, 9)]
    assert [len(EX[f"E{i}"][2]) for i in range(1, 9)] == [61, 117, 40, 40, 48, 40, 66, 40]


# --- E1-E8: parse, check the fields, rebuild byte for byte ----------------------------------

def test_e1_router_solicitation():
    data = EX["E1"][2]
    dgram = parse_datagram(data)
    assert dgram.auth == Auth(b"", b"", NONCE, 0)
    assert dgram.origin is None and dgram.trailer_len == 0
    p = dgram.ipv6
    assert (ipv6_src(p), ipv6_dst(p)) == (LL_CLIENT, ALL_ROUTERS)
    assert (ipv6_plen(p), ipv6_next_header(p), ipv6_hop_limit(p)) == (8, 58, 255)
    m = parse_icmpv6(p)
    assert (m.type, m.code, m.checksum, m.body) == (133, 0, 0x7D37, bytes(4))
    assert icmpv6_checksum_ok(p)
    assert router_solicitation(NONCE) == data
    assert build_datagram(dgram.ipv6, dgram.auth, dgram.origin) == data


def test_e2_router_advertisement():
    data = EX["E2"][2]
    dgram = parse_datagram(data)
    assert dgram.auth is not None and dgram.auth.nonce == NONCE and dgram.auth.confirmation == 0
    assert dgram.origin == Origin("198.51.100.7", 40000)
    p = dgram.ipv6
    assert ipv6_src(p) == server_link_local(SERVER)
    assert ipv6_dst(p) == LL_CLIENT
    assert (ipv6_plen(p), ipv6_hop_limit(p)) == (56, 255)
    assert parse_icmpv6(p).checksum == 0x954C and icmpv6_checksum_ok(p)
    ra = accept_router_advertisement(dgram, NONCE, SERVER)
    assert ra.prefix8 == v6("2001:0:c000:201::")[:8]
    assert (ra.prefix, ra.server, ra.mtu, ra.link_mtu) == (TEREDO_PREFIX, SERVER, 1280, 1280)
    assert ra.retrans_timer == 2000
    assert ra.address(0x2C5A) == CLIENT
    rebuilt = router_advertisement(
        NONCE, Origin("198.51.100.7", 40000), TEREDO_PREFIX, SERVER, 1280, LL_CLIENT
    )
    assert rebuilt == data
    assert build_datagram(dgram.ipv6, dgram.auth, dgram.origin) == data


@pytest.mark.parametrize(
    ("name", "src", "dst"),
    [
        ("E3", CLIENT, PEER),
        ("E4", RELAY_TOKEN, CLIENT),
        ("E6", CLIENT, RELAY_TOKEN),
        ("E8", CLIENT, v6("ff02::1")),
    ],
)
def test_plain_bubbles(name, src, dst):
    data = EX[name][2]
    dgram = parse_datagram(data)
    assert dgram.auth is None and dgram.origin is None
    assert is_bubble(dgram.ipv6) and ipv6_hop_limit(dgram.ipv6) == 0
    assert (ipv6_src(dgram.ipv6), ipv6_dst(dgram.ipv6)) == (src, dst)
    assert bubble(src, dst) == data


def test_e5_indirect_bubble_with_origin():
    data = EX["E5"][2]
    dgram = parse_datagram(data)
    assert dgram.auth is None
    assert dgram.origin == Origin("203.0.113.5", 3545)
    assert dgram.ipv6 == EX["E4"][2]  # the server forwards leg 1 unchanged
    assert build_datagram(bubble(RELAY_TOKEN, CLIENT), origin=Origin("203.0.113.5", 3545)) == data


def test_e7_ping_test():
    data = EX["E7"][2]
    dgram = parse_datagram(data)
    assert dgram.auth is None and dgram.origin is None and dgram.ipv6 == data
    e = parse_echo(dgram.ipv6)
    assert (e.type, e.code, e.ident, e.seq) == (128, 0, 0x1234, 0xB2C3)
    assert e.data == bytes.fromhex("65a1") + bytes(range(0x10, 0x20))
    assert ipv6_hop_limit(data) == 128 and ipv6_plen(data) == 26
    assert parse_icmpv6(data).checksum == 0x26B6
    assert echo_request(CLIENT, NATIVE, 0x1234, 0xB2C3, e.data) == data


def test_origin_rfc_example():
    assert Origin("1.2.3.4", 337).pack() == bytes.fromhex("0000feaefefdfcfb")


# --- the receive parser: miredo's exact acceptance rules ------------------------------------

PKT = bubble(CLIENT, PEER)
AUTH = Auth(nonce=NONCE).pack()
ORIG = Origin("203.0.113.5", 3545).pack()


@pytest.mark.parametrize(
    ("data", "has_auth", "has_origin"),
    [
        (PKT, False, False),
        (AUTH + PKT, True, False),
        (ORIG + PKT, False, True),
        (AUTH + ORIG + PKT, True, True),
    ],
)
def test_accepted_header_orders(data, has_auth, has_origin):
    dgram = parse_datagram(data)
    assert (dgram.auth is not None, dgram.origin is not None) == (has_auth, has_origin)
    assert dgram.ipv6 == PKT and dgram.remainder == PKT and dgram.trailer_len == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (ORIG + AUTH + PKT, "ipv6.version"),  # origin before auth
        (ORIG + ORIG + PKT, "ipv6.version"),  # two origins
        (AUTH + AUTH + PKT, "ipv6.version"),  # two auths
        (AUTH + ORIG + ORIG + PKT, "ipv6.version"),
        (AUTH + b"\x00\x01" + bytes(6) + PKT, "ipv6.version"),  # 00 01 is never an origin
        (ORIG[:1] + b"\x02" + ORIG[2:] + PKT, "ipv6.version"),  # origin must start 00 00
        (b"", "datagram.length"),
        (b"\x60", "datagram.length"),
        (b"\x00\x01" + bytes(10), "auth.length"),
        (bytes((0, 1, 5, 0)) + bytes(13), "auth.id_len"),
        (bytes((0, 1, 0, 200)) + bytes(100), "auth.id_len"),
        (b"\x00\x00\x01\x02", "origin.length"),
        (AUTH + b"\x00\x00\x01", "origin.length"),
        (AUTH + b"\x60", "ipv6.length"),  # 1 byte after auth: no origin peek, too short
        (PKT[:39], "ipv6.length"),
        (ORIG + PKT[:39], "ipv6.length"),
        (b"\x40" + PKT[1:], "ipv6.version"),
        (b"\x01\x00" + PKT[2:], "ipv6.version"),
        (PKT[:5] + b"\x01" + PKT[6:], "ipv6.payload_length"),
    ],
)
def test_rejected_datagrams_name_the_field(data, field):
    with pytest.raises(ParseError) as e:
        parse_datagram(data)
    assert e.value.field == field
    assert "\n" not in str(e.value) and str(e.value).startswith(field + ": ")


def test_auth_with_client_id_and_value_is_skipped_not_checked():
    a = Auth(b"client", b"value-xyz", NONCE, 7)
    dgram = parse_datagram(a.pack() + ORIG + PKT)
    assert dgram.auth == a
    assert dgram.origin == Origin("203.0.113.5", 3545)
    assert dgram.ipv6 == PKT


def test_trailing_bytes_are_tolerated_and_reported():
    ping = echo_request(CLIENT, NATIVE, 1, 2, b"abc")
    trailer = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08"  # an RFC 6081-style trailer
    dgram = parse_datagram(AUTH + ORIG + ping + trailer)
    assert dgram.ipv6 == ping  # what goes to the tunnel / raw IPv6
    assert dgram.remainder == ping + trailer  # what a server forwards over UDP
    assert dgram.trailer_len == len(trailer)
    assert is_bubble(bubble(CLIENT, PEER) + b"xx")  # bubble test ignores trailers too


def test_parser_accepts_bytearray_and_memoryview_but_not_other_types():
    assert parse_datagram(bytearray(PKT)).ipv6 == PKT
    assert parse_datagram(memoryview(ORIG + PKT)).ipv6 == PKT
    for bad in ("text", 100, None, [0x60]):
        with pytest.raises(ParseError):
            parse_datagram(bad)


def test_missing_origin_is_none_and_zero_origin_is_kept():
    zero = Origin("0.0.0.0", 0).pack()
    assert zero == bytes.fromhex("0000ffffffffffff")
    assert parse_datagram(zero + PKT).origin == Origin("0.0.0.0", 0)


def test_hop_limit_is_not_checked():
    hot = PKT[:7] + b"\x01" + PKT[8:]
    assert is_bubble(hot)
    assert parse_datagram(hot).ipv6 == hot


def test_build_datagram_validates_headers():
    with pytest.raises(ValueError):
        build_datagram(PKT, Auth(nonce=b"short"))
    with pytest.raises(ValueError):
        build_datagram(PKT, origin=Origin("203.0.113.5", 70000))
    with pytest.raises(ValueError):
        build_datagram(PKT, Auth(nonce=NONCE, confirmation=256))


# --- hot-path helpers -----------------------------------------------------------------------

def test_ipv6_ok():
    assert ipv6_ok(PKT)
    assert ipv6_ok(PKT + b"trailer")
    assert not ipv6_ok(PKT[:39])
    assert not ipv6_ok(b"\x50" + PKT[1:])
    assert not ipv6_ok(PKT[:5] + b"\x01" + PKT[6:])
    assert ipv6_ok(PKT[:5] + b"\x01" + PKT[6:] + b"x")


def test_accessors_slice_without_building_objects():
    p = build_ipv6(CLIENT, NATIVE, 17, b"payload", hop_limit=9, tclass=0xB8, flow=0xABCDE)
    assert p[:4] == bytes.fromhex("6b8abcde")
    assert (ipv6_tclass(p), ipv6_flow(p)) == (0xB8, 0xABCDE)
    assert (ipv6_src(p), ipv6_dst(p)) == (CLIENT, NATIVE)
    assert (ipv6_plen(p), ipv6_next_header(p), ipv6_hop_limit(p)) == (7, 17, 9)
    assert type(ipv6_src(p)) is bytes  # usable as a dict key
    assert not is_bubble(p)


def test_build_ipv6_rejects_bad_fields():
    with pytest.raises(ValueError):
        build_ipv6(CLIENT[:15], NATIVE, 59, b"")
    with pytest.raises(ValueError):
        build_ipv6(CLIENT, NATIVE, 59, b"", flow=1 << 20)
    with pytest.raises(ValueError):
        build_ipv6(CLIENT, NATIVE, 256, b"")
    with pytest.raises(ValueError):
        bubble(CLIENT, b"")


# --- checksums ------------------------------------------------------------------------------

def test_precomputed_rs_checksums():
    rs = bytes((133, 0, 0, 0)) + bytes(4)
    assert icmpv6_checksum(LL_CLIENT, ALL_ROUTERS, rs) == 0x7D37
    assert icmpv6_checksum(LL_CONE, ALL_ROUTERS, rs) == 0x125D
    cone_rs = router_solicitation(NONCE, src=LL_CONE)
    assert parse_icmpv6(parse_datagram(cone_rs).ipv6).checksum == 0x125D


def test_checksum_ignores_the_current_field_content():
    body = bytes((128, 0, 0xAB, 0xCD)) + b"data"
    assert icmpv6_checksum(CLIENT, NATIVE, body) == icmpv6_checksum(
        CLIENT, NATIVE, body[:2] + b"\x00\x00" + body[4:]
    )


def test_checksum_odd_length_and_corruption_detected():
    p = build_icmpv6(CLIENT, NATIVE, 128, 0, b"\x00\x01\x00\x02odd")
    assert icmpv6_checksum_ok(p)
    assert not icmpv6_checksum_ok(p[:-1] + bytes((p[-1] ^ 1,)))
    assert not icmpv6_checksum_ok(PKT)  # not ICMPv6 at all


# --- RA acceptance: §3.3 steps 2 and 4-7 ------------------------------------------------------

def make_ra(
    options: bytes,
    *,
    nh=58,
    icmp_type=134,
    code=0,
    nonce=NONCE,
    conf=0,
    origin=MAPPED,
) -> Teredo:
    head = bytes((0, 0, 0, 0)) + bytes(4) + (2000).to_bytes(4, "big")
    msg = bytes((icmp_type, code, 0, 0)) + head + options
    src = server_link_local(SERVER)
    ipv6 = build_ipv6(src, LL_CLIENT, nh, msg, 255)
    data = build_datagram(ipv6, Auth(nonce=nonce, confirmation=conf), origin)
    return parse_datagram(data)


def pio(prefix8: bytes = v6("2001:0:c000:201::")[:8], plen=64, length=4) -> bytes:
    body = bytes((3, length, plen, 0x40)) + b"\xff" * 8 + bytes(4) + prefix8 + bytes(8)
    return body + bytes(max(0, length * 8 - len(body)))


def mtu(value: int) -> bytes:
    return bytes((5, 1, 0, 0)) + value.to_bytes(4, "big")


def test_ra_minimal_and_defaults():
    ra = accept_router_advertisement(make_ra(pio()), NONCE, SERVER)
    assert ra.mtu is None and ra.link_mtu == 1280
    assert ra.origin == Origin("198.51.100.7", 40000)


def test_ra_unknown_options_are_skipped_and_mtu_bounds():
    slla = bytes((1, 1)) + bytes(6)
    assert parse_router_advertisement(make_ra(slla + pio() + mtu(65535))).mtu == 65535
    assert parse_router_advertisement(make_ra(mtu(1280) + pio())).mtu == 1280
    # fewer than 8 bytes left after the last option: the loop stops, no error
    assert parse_router_advertisement(make_ra(pio() + bytes(7))).mtu is None


def test_ra_old_prefix_is_rewritten():
    ra = parse_router_advertisement(make_ra(pio(bytes.fromhex("3ffe831fc0000201"))))
    assert ra.prefix8 == bytes.fromhex("20010000c0000201")


@pytest.mark.parametrize(
    ("dgram", "field"),
    [
        (make_ra(pio(), nh=17), "ipv6.next_header"),
        (make_ra(b"", icmp_type=134), "ra.options"),
        (make_ra(pio(), icmp_type=133), "icmpv6.type"),
        (make_ra(pio(), code=1), "icmpv6.code"),
        (make_ra(mtu(1280) * 3), "ra.options"),  # 24 bytes of options < 32
        (make_ra(pio() + bytes((5, 0)) + bytes(6)), "ra.option.length"),
        (make_ra(pio() + bytes((7, 2)) + bytes(6)), "ra.option.length"),
        (make_ra(pio(length=3) + bytes(8)), "ra.pio.length"),
        (make_ra(pio(plen=48)), "ra.pio.prefix_length"),
        (make_ra(pio() + pio()), "ra.pio"),
        (make_ra(pio() + mtu(1279)), "ra.mtu"),
        (make_ra(pio() + mtu(65536)), "ra.mtu"),
        (make_ra(mtu(1280) * 4), "ra.pio"),  # no PIO at all
        (make_ra(pio(bytes.fromhex("ff020000c0000201"))), "ra.pio.prefix"),
    ],
)
def test_ra_content_rejections(dgram, field):
    with pytest.raises(ParseError) as e:
        parse_router_advertisement(dgram)
    assert e.value.field == field


def test_ra_short_payload_rejected():
    ipv6 = build_ipv6(server_link_local(SERVER), LL_CLIENT, 58, bytes((134, 0)) + bytes(10))
    with pytest.raises(ParseError) as e:
        parse_router_advertisement(Teredo(None, None, ipv6))
    assert e.value.field == "ipv6.payload_length"


@pytest.mark.parametrize(
    ("dgram", "nonce", "server", "field"),
    [
        (make_ra(pio()), bytes(8), SERVER, "auth.nonce"),
        (make_ra(pio(), conf=1), NONCE, SERVER, "auth.confirmation"),
        (make_ra(pio(), origin=None), NONCE, SERVER, "origin"),
        (make_ra(pio(), origin=Origin("0.0.0.0", 0)), NONCE, SERVER, "origin"),
        (make_ra(pio()), NONCE, "192.0.2.2", "ra.pio.server"),
    ],
)
def test_ra_acceptance_rejections(dgram, nonce, server, field):
    with pytest.raises(ParseError) as e:
        accept_router_advertisement(dgram, nonce, server)
    assert e.value.field == field


def test_ra_without_auth_rejected_by_acceptance():
    dgram = make_ra(pio())
    dgram = Teredo(None, dgram.origin, dgram.ipv6)
    with pytest.raises(ParseError) as e:
        accept_router_advertisement(dgram, NONCE, SERVER)
    assert e.value.field == "auth"


def test_ra_builder_without_rs_nonce_sends_zero_nonce():
    data = router_advertisement(None, MAPPED, TEREDO_PREFIX, SERVER, 1400, LL_CONE)
    dgram = parse_datagram(data)
    assert dgram.auth.nonce == bytes(8)
    assert ipv6_dst(dgram.ipv6) == LL_CONE  # copied from the RS source as received
    assert parse_router_advertisement(dgram).mtu == 1400


# --- echo and ICMPv6 errors -----------------------------------------------------------------

def test_echo_reply_round_trip_and_non_echo_rejected():
    r = echo_reply(NATIVE, CLIENT, 7, 9, b"xyz")
    assert parse_echo(r) == (129, 0, 7, 9, b"xyz")
    assert icmpv6_checksum_ok(r)
    with pytest.raises(ParseError) as e:
        parse_echo(dest_unreachable(NATIVE, CLIENT, 3, r))
    assert e.value.field == "icmpv6.type"
    with pytest.raises(ParseError) as e:
        parse_echo(build_icmpv6(CLIENT, NATIVE, 128, 0, b"\x00"))
    assert e.value.field == "icmpv6.length"
    with pytest.raises(ParseError) as e:
        parse_echo(PKT)
    assert e.value.field == "ipv6.next_header"


@pytest.mark.parametrize("code", [1, 3])
@pytest.mark.parametrize("size", [40, 200, 1232, 1233, 1500, 9000])
def test_dest_unreachable_is_capped_at_1280(code, size):
    offending = build_ipv6(CLIENT, NATIVE, 17, bytes(size - 40))
    err = dest_unreachable(LL_CLIENT, CLIENT, code, offending)
    assert len(err) == min(1280, 48 + size)
    m = parse_icmpv6(err)
    assert (m.type, m.code) == (1, code)
    assert m.body[:4] == bytes(4)
    assert m.body[4:] == offending[: 1280 - 48]
    assert icmpv6_checksum_ok(err)
    assert (ipv6_src(err), ipv6_dst(err)) == (LL_CLIENT, CLIENT)


def test_packet_too_big():
    offending = build_ipv6(CLIENT, NATIVE, 17, bytes(1460))
    err = packet_too_big(LL_CLIENT, CLIENT, 1280, offending)
    assert len(err) == 1280
    m = parse_icmpv6(err)
    assert (m.type, m.code, int.from_bytes(m.body[:4], "big")) == (2, 0, 1280)
    assert icmpv6_checksum_ok(err)


@pytest.mark.parametrize(
    ("pkt", "allowed"),
    [
        (echo_request(CLIENT, NATIVE, 1, 1, b""), True),
        (build_ipv6(CLIENT, NATIVE, 6, bytes(20)), True),
        (PKT[:39], False),
        (dest_unreachable(NATIVE, CLIENT, 3, PKT), False),  # an ICMPv6 error itself
        (packet_too_big(NATIVE, CLIENT, 1280, PKT), False),
        (build_ipv6(CLIENT, v6("ff02::1"), 17, b""), False),
        (build_ipv6(v6("ff02::1"), NATIVE, 17, b""), False),
        (build_ipv6(bytes(16), NATIVE, 17, b""), False),
        (build_ipv6(CLIENT, NATIVE, 58, b""), False),  # truncated ICMPv6: no type to judge
    ],
)
def test_icmp_error_suppression(pkt, allowed):
    assert icmp_error_allowed(pkt) is allowed


@pytest.mark.parametrize(
    "build",
    [
        lambda: echo_request(CLIENT, NATIVE, 1 << 16, 0, b""),
        lambda: echo_reply(CLIENT, NATIVE, 0, -1, b""),
        lambda: packet_too_big(CLIENT, NATIVE, 1 << 32, PKT),
        lambda: router_advertisement(NONCE, MAPPED, 1 << 32, SERVER, 1280, LL_CLIENT),
        lambda: router_advertisement(NONCE, MAPPED, TEREDO_PREFIX, SERVER, -1, LL_CLIENT),
        lambda: build_icmpv6(CLIENT, NATIVE, 300, 0, b""),
    ],
)
def test_builders_raise_value_error_for_out_of_range_fields(build):
    with pytest.raises(ValueError):
        build()
