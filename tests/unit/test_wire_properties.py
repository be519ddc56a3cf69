"""Property tests: every parser maps arbitrary bytes to a value or ParseError (never another
exception), and build-then-parse is the identity.

Random bytes almost never get past the first length check, so besides plain `binary()` the
strategies assemble near-valid datagrams from real pieces (auth/origin headers, IPv6 headers
with random payload lengths, RA option lists) and then corrupt them.
"""

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.proto.addr import (
    LL_CLIENT,
    TeredoAddress,
    build_teredo,
    is_global_unicast_ipv4,
    mapping_of,
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
    parse_datagram,
    parse_echo,
    parse_icmpv6,
    parse_router_advertisement,
    router_advertisement,
)

PROPS = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

addr16 = st.binary(min_size=16, max_size=16)
ipv4 = st.integers(0, 0xFFFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n)))
port = st.integers(0, 0xFFFF)
byte = st.integers(0, 255)

auths = st.builds(
    Auth,
    client_id=st.binary(max_size=40),
    auth_value=st.binary(max_size=40),
    nonce=st.binary(min_size=8, max_size=8),
    confirmation=byte,
)
origins = st.builds(Origin, ip=ipv4, port=port)


@st.composite
def ipv6_packets(draw, max_payload=200):
    payload = draw(st.binary(max_size=max_payload))
    return build_ipv6(
        draw(addr16),
        draw(addr16),
        draw(byte),
        payload,
        hop_limit=draw(byte),
        tclass=draw(byte),
        flow=draw(st.integers(0, 0xFFFFF)),
    )


@st.composite
def near_datagrams(draw):
    """Valid-looking datagrams, then maybe cut, extended, header-swapped or bit-flipped."""
    parts = []
    if draw(st.booleans()):
        parts.append(draw(auths).pack())
    if draw(st.booleans()):
        parts.append(draw(origins).pack())
    if draw(st.booleans()):
        parts.reverse()
    parts.append(draw(ipv6_packets()))
    data = b"".join(parts)
    action = draw(st.sampled_from(["keep", "cut", "extend", "flip", "plen"]))
    if action == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=30))
    elif action == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes((data[i] ^ draw(st.integers(1, 255)),)) + data[i + 1 :]
    elif action == "plen":
        # A random payload length field, found wherever the IPv6 header ended up.
        i = len(data) - len(parts[-1])
        data = data[: i + 4] + draw(st.binary(min_size=2, max_size=2)) + data[i + 6 :]
    return data


any_datagram = st.one_of(st.binary(max_size=120), near_datagrams())


def check_parsed(data: bytes, t: Teredo) -> None:
    """Invariants of every successful parse."""
    assert ipv6_ok(t.ipv6)
    assert len(t.ipv6) == 40 + ipv6_plen(t.ipv6)
    assert t.remainder[: len(t.ipv6)] == t.ipv6
    assert t.trailer_len == len(t.remainder) - len(t.ipv6) >= 0
    # The parse is lossless: re-encoding the headers gives back the datagram.
    assert build_datagram(t.remainder, t.auth, t.origin) == data


# --- parse_datagram ---------------------------------------------------------------------------

@PROPS
@given(any_datagram)
def test_parse_datagram_total(data):
    try:
        t = parse_datagram(data)
    except ParseError as e:
        assert e.field and "\n" not in str(e)
    else:
        check_parsed(data, t)


@PROPS
@given(st.one_of(st.none(), auths), st.one_of(st.none(), origins), ipv6_packets(),
       st.binary(max_size=20))
def test_build_then_parse_is_identity(auth, origin, pkt, trailer):
    data = build_datagram(pkt + trailer, auth, origin)
    t = parse_datagram(data)
    assert t.auth == auth
    assert t.origin == origin
    assert t.ipv6 == pkt
    assert t.trailer_len == len(trailer)
    assert t.remainder == pkt + trailer


@PROPS
@given(near_datagrams())
def test_memoryview_and_bytearray_parse_like_bytes(data):
    outcomes = []
    for form in (data, bytearray(data), memoryview(data)):
        try:
            t = parse_datagram(form)
            outcomes.append((t.auth, t.origin, bytes(t.ipv6), t.trailer_len))
        except ParseError as e:
            outcomes.append(e.field)
    assert outcomes[0] == outcomes[1] == outcomes[2]


@PROPS
@given(st.one_of(st.binary(max_size=100), near_datagrams()))
def test_ipv6_ok_agrees_with_the_parser_on_bare_packets(data):
    if len(data) >= 2 and data[0] == 0 and data[1] in (0, 1):
        return  # those are header prefixes, not bare IPv6 packets
    try:
        parse_datagram(data)
        parsed = True
    except ParseError:
        parsed = False
    assert ipv6_ok(data) is parsed


# --- hot-path accessors and builders ---------------------------------------------------------

@PROPS
@given(addr16, addr16, byte, st.binary(max_size=64), byte, byte, st.integers(0, 0xFFFFF))
def test_ipv6_builder_and_accessors_agree(src, dst, nh, payload, hlim, tclass, flow):
    p = build_ipv6(src, dst, nh, payload, hlim, tclass, flow)
    assert ipv6_ok(p)
    assert (ipv6_src(p), ipv6_dst(p), ipv6_next_header(p)) == (src, dst, nh)
    assert (ipv6_plen(p), ipv6_hop_limit(p)) == (len(payload), hlim)
    assert (ipv6_tclass(p), ipv6_flow(p)) == (tclass, flow)
    assert is_bubble(p) is (nh == 59 and not payload)


@PROPS
@given(addr16, addr16)
def test_bubble_is_a_bubble(src, dst):
    b = bubble(src, dst)
    assert len(b) == 40 and is_bubble(b) and ipv6_hop_limit(b) == 0
    assert parse_datagram(b).ipv6 == b


def reference_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """Textbook 16-bit word loop with end-around carry, for comparison."""
    icmp = icmp[:2] + b"\x00\x00" + icmp[4:]
    data = src + dst + len(icmp).to_bytes(4, "big") + bytes((0, 0, 0, 58)) + icmp
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@PROPS
@given(addr16, addr16, st.binary(min_size=4, max_size=300))
def test_checksum_matches_reference_and_verifies(src, dst, icmp):
    ck = icmpv6_checksum(src, dst, icmp)
    assert ck == reference_checksum(src, dst, icmp)
    p = build_icmpv6(src, dst, icmp[0], icmp[1], icmp[4:])
    assert icmpv6_checksum_ok(p)


# --- Teredo addresses ----------------------------------------------------------------------

@PROPS
@given(st.one_of(st.binary(max_size=20), addr16))
def test_teredo_address_parse_total(b):
    try:
        a = TeredoAddress.parse(b)
    except ParseError as e:
        assert e.field == "teredo.address" and len(b) != 16
    else:
        assert len(b) == 16 and a.packed() == b
        assert a.mapping == mapping_of(b)


@PROPS
@given(st.integers(0, 0xFFFFFFFF), ipv4, st.integers(0, 0xFFFF), port, ipv4)
def test_teredo_build_then_parse(prefix, server, flags, p, client):
    a = TeredoAddress(prefix, server, flags, p, client)
    assert TeredoAddress.parse(a.packed()) == a
    assert build_teredo(prefix, server, flags, p, client) == a.packed()
    assert TeredoAddress.from_text(str(a)) == a


@PROPS
@given(ipv4)
def test_global_check_is_total_on_ipv4(ip):
    assert isinstance(is_global_unicast_ipv4(ip), bool)


# --- RA, echo, ICMPv6 ----------------------------------------------------------------------

@st.composite
def ra_datagrams(draw):
    """RAs whose options come from a list of plausible and broken options."""
    opt = st.one_of(
        st.builds(
            lambda plen, length, prefix: bytes((3, length, plen, 0x40)) + b"\xff" * 8
            + bytes(4) + prefix + bytes(8) + bytes(max(0, length * 8 - 32)),
            st.sampled_from([64, 64, 64, 48, 128]),
            st.sampled_from([4, 4, 4, 3, 5]),
            st.binary(min_size=8, max_size=8),
        ),
        st.builds(lambda v: bytes((5, 1, 0, 0)) + v.to_bytes(4, "big"),
                  st.sampled_from([1280, 1400, 65535, 1279, 65536, 0, 9000])),
        st.builds(lambda t, n, b: bytes((t, n)) + b, byte, st.integers(0, 4),
                  st.binary(min_size=0, max_size=30)),
    )
    opts = draw(st.lists(opt, max_size=4))
    if draw(st.integers(0, 3)):  # mostly include one good PIO, somewhere in the list
        good = bytes((3, 4, 64, 0x40)) + b"\xff" * 8 + bytes(4) + draw(
            st.binary(min_size=8, max_size=8)) + bytes(8)
        opts.insert(draw(st.integers(0, len(opts))), good)
    options = b"".join(opts)
    head = bytes((draw(byte), 0)) + bytes(6) + draw(st.binary(min_size=4, max_size=4))
    icmp_type = draw(st.sampled_from([134] * 8 + [133, 0]))
    nh = draw(st.sampled_from([58] * 8 + [59]))
    msg = bytes((icmp_type, draw(st.sampled_from([0] * 8 + [1])), 0, 0)) + head + options
    ipv6 = build_ipv6(draw(addr16), LL_CLIENT, nh, msg, 255)
    return Teredo(draw(st.one_of(st.none(), auths)), draw(st.one_of(st.none(), origins)), ipv6)


@PROPS
@given(st.one_of(ra_datagrams(), st.builds(lambda b: Teredo(None, None, b), any_datagram)))
def test_ra_parsers_total(t):
    try:
        ra = parse_router_advertisement(t)
    except ParseError as e:
        assert e.field
    else:
        assert len(ra.prefix8) == 8 and ra.prefix8[0] != 0xFF
        assert ra.mtu is None or 1280 <= ra.mtu <= 65535
    try:
        accept_router_advertisement(t, bytes(8), "192.0.2.1")
    except ParseError as e:
        assert e.field


@PROPS
@given(st.one_of(st.none(), st.binary(min_size=8, max_size=8)), origins,
       st.integers(0, 0xFEFFFFFF), ipv4, st.integers(1280, 65535), addr16)
def test_ra_build_then_accept(nonce, origin, prefix, server, mtu, dst):
    t = parse_datagram(router_advertisement(nonce, origin, prefix, server, mtu, dst))
    assert t.origin == origin and ipv6_dst(t.ipv6) == dst
    n = bytes(8) if nonce is None else nonce
    if origin.ip == "0.0.0.0":
        return  # an all-zero origin counts as absent for a client
    ra = accept_router_advertisement(t, n, server)
    expected_prefix = 0x20010000 if prefix == 0x3FFE831F else prefix
    assert (ra.prefix, ra.server, ra.mtu) == (expected_prefix, server, mtu)
    flags = 0x1234
    assert mapping_of(ra.address(flags)) == origin


@PROPS
@given(st.one_of(any_datagram, ipv6_packets()))
def test_icmp_parsers_total(data):
    for parser in (parse_icmpv6, parse_echo):
        try:
            parser(data)
        except ParseError as e:
            assert e.field
    assert isinstance(icmp_error_allowed(data), bool)
    assert isinstance(icmpv6_checksum_ok(data), bool)


@PROPS
@given(addr16, addr16, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=100),
       st.booleans(), byte)
def test_echo_build_then_parse(src, dst, ident, seq, data, request, hlim):
    build = echo_request if request else echo_reply
    p = build(src, dst, ident, seq, data, hlim)
    assert parse_echo(p) == (128 if request else 129, 0, ident, seq, data)
    assert icmpv6_checksum_ok(p)
    assert parse_datagram(p).ipv6 == p
