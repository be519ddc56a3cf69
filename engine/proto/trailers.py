"""RFC 6081 trailers: the type-length-value records after the IPv6 packet of a Teredo datagram.

Why they live here and not in `wire.py`: RFC 4380 peers (miredo) ignore everything after
`40 + plen` (`wire.parse_datagram` counts it in `trailer_len`), so the extensions can ride on
plain bubbles without changing what such a peer sees.  Only the client's extension code
(`engine.proto.rfc6081`) reads or writes them; the data path never looks at them.

Layout (docs/protocol.md §13.1 says which of these were checked against a published text and
which are still unconfirmed recollection of RFC 6081 §4):

* 0x01 Nonce, length 4: 4 opaque bytes (unconfirmed);
* 0x03 Alternate Address (checked, §13.1): the length byte counts what follows it, 2 reserved
  bytes (sent as 0, ignored on receipt), then 1 to 4 entries of an IPv4 address and a UDP
  port, both in network byte order and not obfuscated, so the length is 8, 14, 20 or 26.  A
  sender must not put port 0 or a non-unicast address in an entry; such an entry is dropped
  on receipt, and only the first 4 usable entries are kept, so one careless sender cannot
  make us probe junk or many endpoints;
* 0x04 Neighbor Discovery Option, length 4: the discovery type (0 solicitation,
  1 advertisement) and 3 reserved bytes (unconfirmed);
* 0x05 Random Port, length 2: a UDP port (unconfirmed).

`parse_trailers` follows the discipline of `wire.py`: any byte string gives a `Trailers` or a
`ParseError` naming the field, nothing else.  Unknown types are skipped (kept in `unknown`),
so a later extension does not make a whole trailer set unreadable; a known type with a wrong
length, a record that overruns the buffer, or a known type seen twice is a `ParseError`
(an engine choice: a peer that repeats a trailer is broken, and guessing which copy it
meant would make two implementations disagree silently).
"""

from __future__ import annotations

import socket

from .errors import ParseError
from .records import dataclass

T_NONCE = 0x01
T_ALTERNATE_ADDRESS = 0x03
T_ND_OPTION = 0x04
T_RANDOM_PORT = 0x05

ND_SOLICITATION = 0
ND_ADVERTISEMENT = 1

_KNOWN = frozenset((T_NONCE, T_ALTERNATE_ADDRESS, T_ND_OPTION, T_RANDOM_PORT))

NONCE_LEN = 4
ALT_ENTRY_LEN = 6
#: The most alternate addresses one trailer carries: the published layout allows lengths 8 to
#: 26 only (2 reserved bytes and 1 to 4 entries), docs/protocol.md §13.1.
MAX_ALTERNATES = 4

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Trailers:
    """The trailers of one datagram; a field is None when its trailer was absent."""

    nonce: bytes | None = None
    alternates: tuple[Endpoint, ...] | None = None
    nd: int | None = None
    random_port: int | None = None
    unknown: tuple[tuple[int, bytes], ...] = ()

    def __bool__(self) -> bool:
        return (self.nonce is not None or self.alternates is not None or self.nd is not None
                or self.random_port is not None or bool(self.unknown))

    def pack(self) -> bytes:
        return build_trailers(self)


NONE = Trailers()


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def usable_alternate(raw: bytes, port: int) -> bool:
    """An alternate entry a sender may put on the wire: a unicast IPv4 (not 0/8, loopback,
    multicast or the reserved 240/4 block, which holds the broadcast address) and a port
    other than 0.  Why not trust the sender: these endpoints are bubbled on its word."""
    first = raw[0]
    return port != 0 and first != 0 and first != 127 and first < 224


def parse_trailers(data: bytes) -> Trailers:
    """The records of `data` (the bytes after `40 + plen`); b"" gives the empty `Trailers`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParseError("trailer", f"not a byte string: {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    pos = 0
    nonce: bytes | None = None
    alternates: tuple[Endpoint, ...] | None = None
    nd: int | None = None
    random_port: int | None = None
    unknown: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    while pos < n:
        if n - pos < 2:
            raise ParseError("trailer.length", f"{n - pos} byte left, a trailer needs 2")
        kind = data[pos]
        length = data[pos + 1]
        end = pos + 2 + length
        if end > n:
            raise ParseError("trailer.length",
                             f"type {kind:#04x} claims {length} bytes, {n - pos - 2} left")
        value = data[pos + 2:end]
        if kind in seen:
            raise ParseError("trailer.type", f"type {kind:#04x} twice")
        if kind in _KNOWN:
            seen.add(kind)
        if kind == T_NONCE:
            if length != NONCE_LEN:
                raise ParseError("trailer.nonce", f"length {length}, expected 4")
            nonce = value
        elif kind == T_ALTERNATE_ADDRESS:
            if length < 2 + ALT_ENTRY_LEN or (length - 2) % ALT_ENTRY_LEN:
                raise ParseError("trailer.alternate_address",
                                 f"length {length}, expected 2 + 6n with n >= 1")
            # the 2 reserved bytes are ignored; unusable entries are dropped, and more than
            # MAX_ALTERNATES (a sender beyond the published 26-byte maximum) are cut off
            usable = [
                (_ipv4(value[i:i + 4]), int.from_bytes(value[i + 4:i + 6], "big"))
                for i in range(2, length, ALT_ENTRY_LEN)
                if usable_alternate(value[i:i + 4],
                                     int.from_bytes(value[i + 4:i + 6], "big"))
            ][:MAX_ALTERNATES]
            alternates = tuple(usable) if usable else None
        elif kind == T_ND_OPTION:
            if length != 4:
                raise ParseError("trailer.nd_option", f"length {length}, expected 4")
            if value[0] not in (ND_SOLICITATION, ND_ADVERTISEMENT):
                raise ParseError("trailer.nd_option", f"discovery type {value[0]}")
            nd = value[0]
        elif kind == T_RANDOM_PORT:
            if length != 2:
                raise ParseError("trailer.random_port", f"length {length}, expected 2")
            random_port = int.from_bytes(value, "big")
        else:
            unknown.append((kind, value))
        pos = end
    return Trailers(nonce, alternates, nd, random_port, tuple(unknown))


def build_trailers(t: Trailers) -> bytes:
    """The wire form of `t`: nonce, alternate addresses, ND option, random port, then the
    unknown records in their order (the order is free; parsing accepts any)."""
    out = bytearray()
    if t.nonce is not None:
        if len(t.nonce) != NONCE_LEN:
            raise ValueError(f"nonce trailer: {len(t.nonce)} bytes, expected 4")
        out += bytes((T_NONCE, NONCE_LEN)) + t.nonce
    if t.alternates is not None:
        if not 1 <= len(t.alternates) <= MAX_ALTERNATES:
            raise ValueError(f"alternate address trailer: {len(t.alternates)} entries, "
                             f"expected 1-{MAX_ALTERNATES}")
        out += bytes((T_ALTERNATE_ADDRESS, 2 + ALT_ENTRY_LEN * len(t.alternates), 0, 0))
        for ip, port in t.alternates:
            if not 1 <= port <= 0xFFFF:
                raise ValueError(f"alternate address port out of range: {port}")
            raw = socket.inet_aton(ip)
            if not usable_alternate(raw, port):
                raise ValueError(f"alternate address not unicast: {ip}")
            out += raw + port.to_bytes(2, "big")
    if t.nd is not None:
        if t.nd not in (ND_SOLICITATION, ND_ADVERTISEMENT):
            raise ValueError(f"nd option trailer: discovery type {t.nd}")
        out += bytes((T_ND_OPTION, 4, t.nd, 0, 0, 0))
    if t.random_port is not None:
        if not 0 <= t.random_port <= 0xFFFF:
            raise ValueError(f"random port trailer: port out of range: {t.random_port}")
        out += bytes((T_RANDOM_PORT, 2)) + t.random_port.to_bytes(2, "big")
    for kind, value in t.unknown:
        if kind in _KNOWN:
            raise ValueError(f"unknown trailer with a known type {kind:#04x}")
        if not 0 <= kind <= 0xFF or len(value) > 0xFF:
            raise ValueError("unknown trailer: type or value out of range")
        out += bytes((kind, len(value))) + value
    return bytes(out)


def trailer_bytes(data: bytes, trailer_len: int) -> bytes:
    """The trailer part of a datagram whose parse counted `trailer_len` bytes after the packet."""
    return data[len(data) - trailer_len:] if trailer_len else b""
