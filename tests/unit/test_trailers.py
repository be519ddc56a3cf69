"""RFC 6081 trailers (engine.proto.trailers): the layouts byte by byte, the ParseError
discipline of wire.py on any input, and build/parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.proto.errors import ParseError
from engine.proto.trailers import (
    ND_ADVERTISEMENT,
    ND_SOLICITATION,
    NONE,
    Trailers,
    build_trailers,
    parse_trailers,
    trailer_bytes,
)
from engine.proto.wire import bubble, parse_datagram

A = bytes.fromhex("20010000cb00710a00000000000000aa")
B = bytes.fromhex("20010000cb00710a00000000000000bb")


def test_layouts():
    assert build_trailers(Trailers(nonce=b"\x01\x02\x03\x04")) == bytes.fromhex("010401020304")
    assert build_trailers(Trailers(alternates=(("10.1.0.2", 41111),))) == bytes.fromhex(
        "0308" "0000" "0a010002" "a097")
    assert build_trailers(Trailers(nd=ND_SOLICITATION)) == bytes.fromhex("040400000000")
    assert build_trailers(Trailers(nd=ND_ADVERTISEMENT)) == bytes.fromhex("040401000000")
    assert build_trailers(Trailers(random_port=0x1234)) == bytes.fromhex("05021234")
    assert parse_trailers(b"") == NONE and not NONE


def test_unknown_types_are_skipped_and_kept():
    t = parse_trailers(bytes.fromhex("0903aabbcc" "05020050" "0900"))
    assert t.random_port == 80 and t.unknown == ((9, b"\xaa\xbb\xcc"), (9, b""))


@pytest.mark.parametrize("raw,field", [
    ("01", "trailer.length"),
    ("0105aabb", "trailer.length"),
    ("0103010203", "trailer.nonce"),
    ("03020000", "trailer.alternate_address"),
    ("030a00000a0100020001ffff", "trailer.alternate_address"),
    ("0309000001020304005000", "trailer.alternate_address"),
    ("040402000000", "trailer.nd_option"),
    ("0403000000", "trailer.nd_option"),
    ("050100", "trailer.random_port"),
    ("0502000105020002", "trailer.type"),
])
def test_malformed(raw, field):
    with pytest.raises(ParseError) as e:
        parse_trailers(bytes.fromhex(raw))
    assert e.value.field == field


def test_alternate_address_entries_a_sender_must_not_send_are_dropped():
    """Port 0 and non-unicast addresses are dropped, at most 4 entries are kept, and the
    reserved bytes are ignored (docs/protocol.md §13.1: lengths 8-26, port not 0, unicast)."""
    entries = ["00000000a097", "0a010002" "0000", "e0000001a097", "7f000001a097",
               "ffffffffa097"] + [f"0a0100{i:02x}a0{i:02x}" for i in range(1, 7)]
    raw = bytes.fromhex("03" + f"{2 + 6 * len(entries):02x}" + "ffff" + "".join(entries))
    t = parse_trailers(raw)
    assert t.alternates == tuple((f"10.1.0.{i}", 0xA000 + i) for i in range(1, 5))
    only_bad = bytes.fromhex("0308" "0000" "0a0100020000")
    assert parse_trailers(only_bad).alternates is None
    for bad in ((("10.1.0.2", 0),), (("224.0.0.1", 5),), (("10.1.0.2", 1),) * 5):
        with pytest.raises(ValueError):
            build_trailers(Trailers(alternates=bad))


def test_a_bubble_with_trailers_is_still_a_plain_bubble_to_wire():
    tr = build_trailers(Trailers(nonce=b"abcd", random_port=5))
    d = parse_datagram(bubble(A, B) + tr)
    assert d.ipv6 == bubble(A, B) and d.trailer_len == len(tr)
    assert parse_trailers(trailer_bytes(bubble(A, B) + tr, d.trailer_len)).random_port == 5


#: what a sender may put in an Alternate Address entry: a unicast IPv4 and a port not 0
_unicast = st.tuples(st.integers(1, 223).filter(lambda o: o != 127),
                     *[st.integers(0, 255)] * 3).map(lambda t: ".".join(map(str, t)))
_known = {1, 3, 4, 5}
trailers = st.builds(
    Trailers,
    nonce=st.none() | st.binary(min_size=4, max_size=4),
    alternates=st.none() | st.lists(st.tuples(_unicast, st.integers(1, 0xFFFF)),
                                    min_size=1, max_size=4).map(tuple),
    nd=st.none() | st.sampled_from([ND_SOLICITATION, ND_ADVERTISEMENT]),
    random_port=st.none() | st.integers(0, 0xFFFF),
    unknown=st.lists(st.tuples(st.integers(0, 255).filter(lambda k: k not in _known),
                               st.binary(max_size=40)), max_size=3).map(tuple),
)


@given(trailers)
def test_build_then_parse_is_identity(t):
    assert parse_trailers(build_trailers(t)) == t


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_parse_error(data):
    try:
        t = parse_trailers(data)
    except ParseError:
        return
    assert parse_trailers(build_trailers(t)) == t


@given(trailers, st.binary(max_size=8))
def test_corrupted_trailers_never_raise_anything_else(t, junk):
    raw = bytearray(build_trailers(t) + junk)
    for i in range(0, len(raw), 3):
        raw[i] ^= 0x5A
        try:
            parse_trailers(bytes(raw))
        except ParseError:
            pass
