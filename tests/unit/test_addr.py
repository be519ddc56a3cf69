"""Teredo addresses, miredo's global-IPv4 table and the well-known link-local addresses."""

import ipaddress
import random

import pytest

from engine.proto.addr import (
    _NON_GLOBAL_V4,
    ALL_NODES,
    ALL_ROUTERS,
    CONE_FLAG,
    LL_CLIENT,
    LL_CONE,
    RANDOM_FLAGS_MASK,
    TEREDO_PORT,
    TEREDO_PREFIX,
    TeredoAddress,
    build_teredo,
    clear_mapping,
    flags_of,
    has_prefix,
    ipv4_pack,
    ipv6_pack,
    ipv6_text,
    is_global6,
    is_global_unicast_ipv4,
    is_global_unicast_ipv4_int,
    is_link_local6,
    is_multicast6,
    is_unspecified6,
    is_valid_prefix,
    mapped_ipv4_int,
    mapping_of,
    obfuscated_mapping,
    random_flags,
    secondary_server_address,
    server_link_local,
    server_of,
)
from engine.proto.errors import ParseError


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


# --- building and parsing -------------------------------------------------------------------

# (address text, server, flags, mapped ip, mapped port): the spec example, the E-scenario peer and
# the two clients Debian's miredo qualified in the lab pcaps.
KNOWN = [
    ("2001:0:c000:201:2c5a:63bf:39cc:9bf8", "192.0.2.1", 0x2C5A, "198.51.100.7", 40000),
    ("2001:0:c000:201:413:3caf:34ff:8ef6", "192.0.2.1", 0x0413, "203.0.113.9", 50000),
    ("2001:0:cb00:710a:c9:3c53:39cc:9bfe", "203.0.113.10", 0x00C9, "198.51.100.1", 50092),
    ("2001:0:cb00:710a:1c05:6289:39cc:9bfd", "203.0.113.10", 0x1C05, "198.51.100.2", 40310),
]


@pytest.mark.parametrize(("text", "server", "flags", "ip", "port"), KNOWN)
def test_build_matches_known_addresses(text, server, flags, ip, port):
    packed = build_teredo(TEREDO_PREFIX, server, flags, port, ip)
    assert packed == v6(text)
    a = TeredoAddress(TEREDO_PREFIX, server, flags, port, ip)
    assert a.packed() == packed
    assert str(a) == text


@pytest.mark.parametrize(("text", "server", "flags", "ip", "port"), KNOWN)
def test_parse_known_addresses(text, server, flags, ip, port):
    a = TeredoAddress.parse(v6(text))
    assert a == TeredoAddress(TEREDO_PREFIX, server, flags, port, ip)
    assert a.mapping == (ip, port)
    assert mapping_of(v6(text)) == (ip, port)
    assert server_of(v6(text)) == server
    assert flags_of(v6(text)) == flags
    assert TeredoAddress.from_text(text) == a
    # Every client flag set in the lab and the spec fits RFC 5991's random-bits mask.
    assert flags & ~RANDOM_FLAGS_MASK == 0
    assert not a.cone


def test_obfuscation_is_bit_inversion():
    raw = build_teredo(TEREDO_PREFIX, "0.0.0.0", 0, 0, "0.0.0.0")
    assert raw[10:16] == b"\xff" * 6
    raw = build_teredo(TEREDO_PREFIX, "255.255.255.255", 0xFFFF, 0xFFFF, "255.255.255.255")
    assert raw[4:10] == b"\xff" * 6 and raw[10:16] == bytes(6)


def test_one_obfuscation_for_addresses_and_origins():
    raw = build_teredo(TEREDO_PREFIX, "192.0.2.1", 0, 40000, "198.51.100.7")
    assert raw[10:16] == obfuscated_mapping("198.51.100.7", 40000)
    assert clear_mapping(raw[10:16]) == ("198.51.100.7", 40000) == mapping_of(raw)
    assert mapped_ipv4_int(raw) == int(ipaddress.IPv4Address("198.51.100.7"))


def test_secondary_server_address_is_primary_plus_one():
    assert secondary_server_address("203.0.113.10") == "203.0.113.11"
    assert secondary_server_address("203.0.113.255") == "203.0.114.0"
    assert secondary_server_address("255.255.255.255") is None


def test_non_default_prefix_and_cone_flag():
    a = TeredoAddress(0x3FFE831F, "203.0.113.10", CONE_FLAG, 3544, "203.0.113.10")
    assert str(a).startswith("3ffe:831f:cb00:710a:8000:f227:")
    assert a.cone
    assert has_prefix(a.packed(), 0x3FFE831F)
    assert not has_prefix(a.packed(), TEREDO_PREFIX)


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), "2001::1", None, 16])
def test_parse_rejects_wrong_length_or_type(bad):
    with pytest.raises(ParseError) as e:
        TeredoAddress.parse(bad)
    assert e.value.field == "teredo.address"


def test_from_text_rejects_garbage():
    with pytest.raises(ParseError) as e:
        TeredoAddress.from_text("not-an-address")
    assert e.value.field == "teredo.address"


@pytest.mark.parametrize(
    "args",
    [
        (TEREDO_PREFIX, "192.0.2.1", 0, 65536, "198.51.100.1"),
        (TEREDO_PREFIX, "192.0.2.1", 0x10000, 1, "198.51.100.1"),
        (-1, "192.0.2.1", 0, 1, "198.51.100.1"),
        (TEREDO_PREFIX, "192.0.2", 0, 1, "198.51.100.1"),
        (TEREDO_PREFIX, "192.0.2.1", 0, 1, "127.1"),
    ],
)
def test_build_rejects_out_of_range_fields(args):
    with pytest.raises(ValueError):
        build_teredo(*args)


def test_random_flags_uses_the_rfc5991_mask():
    assert random_flags(lambda bits: (1 << bits) - 1) == 0x3CFF
    assert random_flags(lambda bits: 0) == 0
    rng = random.Random(4380)
    seen = 0
    for _ in range(200):
        f = random_flags(rng.getrandbits)
        assert f & 0xC300 == 0  # C, R, U and G are never set
        seen |= f
    assert seen == 0x3CFF  # every random bit does get used


def test_random_flags_asks_for_16_bits():
    asked = []

    def randbits(n):
        asked.append(n)
        return 0x1234

    assert random_flags(randbits) == 0x1234 & 0x3CFF
    assert asked == [16]


# --- the global unicast IPv4 table (exact miredo rule) --------------------------------------

REJECTED_RANGES = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "192.88.99.0/24",
    "224.0.0.0/4",
    "255.255.255.255/32",
]


@pytest.mark.parametrize("net", REJECTED_RANGES)
def test_rejected_ranges_edges_and_neighbours(net):
    n = ipaddress.IPv4Network(net)
    assert not is_global_unicast_ipv4(str(n.network_address))
    assert not is_global_unicast_ipv4(str(n.broadcast_address))
    below = int(n.network_address) - 1
    above = int(n.broadcast_address) + 1
    # A neighbour is global unless it falls into another rejected range.
    for nb in (below, above):
        if 0 <= nb <= 0xFFFFFFFF:
            ip = ipaddress.IPv4Address(nb)
            expected = not any(ip in ipaddress.IPv4Network(r) for r in REJECTED_RANGES)
            assert is_global_unicast_ipv4(str(ip)) is expected, str(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "192.0.2.1",  # TEST-NET-1: labs depend on these being accepted
        "198.51.100.7",
        "203.0.113.10",
        "100.64.0.1",  # CGN space is accepted by miredo
        "198.18.0.1",
        "192.0.0.1",
        "240.0.0.1",  # class E, except the limited broadcast
        "255.255.255.254",
        "8.8.8.8",
        "172.15.255.255",
        "172.32.0.0",
        "192.88.98.255",
    ],
)
def test_accepted_addresses(ip):
    assert is_global_unicast_ipv4(ip)


def test_global_table_rejects_non_ipv4_text():
    with pytest.raises(ValueError):
        is_global_unicast_ipv4("2001:db8::1")


def test_fast_global_check_matches_the_table():
    rng = random.Random(2)
    for _ in range(20000):
        n = rng.getrandbits(32)
        expected = all(n & mask != net for net, mask in _NON_GLOBAL_V4)
        assert is_global_unicast_ipv4_int(n) is expected, hex(n)


def test_global_table_matches_reference_on_random_addresses():
    rng = random.Random(1)
    nets = [ipaddress.IPv4Network(r) for r in REJECTED_RANGES]
    for _ in range(5000):
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        assert is_global_unicast_ipv4(str(ip)) is not any(ip in n for n in nets)


# --- well-known link-local addresses ----------------------------------------------------------

def test_link_local_constants():
    assert v6("fe80::ffff:ffff:ffff") == LL_CLIENT
    assert v6("fe80::8000:5445:5245:444f") == LL_CONE
    assert LL_CONE[10:16] == b"TEREDO"
    assert v6("ff02::2") == ALL_ROUTERS
    assert v6("ff02::1") == ALL_NODES


@pytest.mark.parametrize(
    ("primary", "expected"),
    [
        ("192.0.2.1", "fe80::8000:f227:3fff:fdfe"),
        ("203.0.113.10", "fe80::8000:f227:34ff:8ef5"),  # as Debian's miredo-server sends it
    ],
)
def test_server_link_local(primary, expected):
    ll = server_link_local(primary)
    assert ll == v6(expected)
    # It is a Teredo-style interface id: cone flag, ~3544, ~server IPv4.
    assert mapping_of(ll) == (primary, TEREDO_PORT)
    assert flags_of(ll) == CONE_FLAG


# --- IPv6 classes and prefix validity --------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "glob", "ll", "mc"),
    [
        ("::", False, False, False),
        ("::1", False, False, False),
        ("fe80::1", False, True, False),
        ("febf:ffff::1", False, True, False),
        ("fec0::1", True, False, False),  # site-local counts as global for miredo
        ("fd00::1", True, False, False),  # so does ULA
        ("ff02::1", False, False, True),
        ("2001:db8::1", True, False, False),
        ("2001:0:c000:201:2c5a:63bf:39cc:9bf8", True, False, False),
    ],
)
def test_ipv6_classes(text, glob, ll, mc):
    a = v6(text)
    assert is_global6(a) is glob
    assert is_link_local6(a) is ll
    assert is_multicast6(a) is mc
    assert is_unspecified6(a) is (text == "::")


def test_prefix_validity():
    assert is_valid_prefix(TEREDO_PREFIX)
    assert is_valid_prefix(0x3FFE831F)
    assert is_valid_prefix(0)
    assert not is_valid_prefix(0xFF020000)
    assert not is_valid_prefix(1 << 32)


def test_text_helpers_round_trip():
    assert ipv6_text(ipv6_pack("2001:db8:0:0::1")) == "2001:db8::1"
    assert ipv4_pack("203.0.113.5") == bytes((203, 0, 113, 5))
    with pytest.raises(ValueError):
        ipv6_pack("2001:db8::g")


def test_mapping_of_gives_inet_ntoa_s_text_for_every_octet():
    """`mapping_of` (and `Peer.mapping`, which inlines it) joins per-octet strings; the
    reference is `clear_mapping`, through `inet_ntoa` as `recvfrom`'s text is."""
    from engine.proto.peers import Peer

    for b in range(256):
        raw = bytes(10) + bytes((b, 255 - b, b, 255 - b, (b * 7) & 255, (b * 13) & 255))
        assert mapping_of(raw) == clear_mapping(raw[10:16]) == Peer(raw, None, 0).mapping
