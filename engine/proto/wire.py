"""Teredo wire formats: the UDP payload (auth, origin, IPv6), bubbles, RS/RA, echo, ICMPv6 errors.

`parse_datagram` follows miredo's receive parser exactly (docs/protocol.md §2.3) so that we
accept and reject the same datagrams as a miredo peer; every parser here raises `ParseError`
(naming the packet field) and nothing else, whatever bytes it is given.

The `ipv6_*` accessors run once or more per forwarded packet on a relay, so they are bare
index/slice expressions over `bytes`: no objects are built per packet. They assume the caller
already checked `ipv6_ok(pkt)` (or got the packet from `parse_datagram`).
"""

from __future__ import annotations

import socket
from collections import namedtuple

from .addr import (
    ALL_ROUTERS,
    LL_CLIENT,
    OLD_TEREDO_PREFIX,
    TEREDO_PREFIX,
    clear_mapping,
    ipv4_pack,
    obfuscated_mapping,
    server_link_local,
)
from .errors import ParseError
from .records import dataclass

IPV6_HEADER_LEN = 40
NH_ICMPV6 = 58
NH_NONE = 59

ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_OPT_PREFIX_INFORMATION = 3
ND_OPT_MTU = 5

UNREACH_ADMIN_PROHIBITED = 1
UNREACH_ADDRESS = 3

MIN_MTU = 1280
"""IPv6 minimum link MTU: the default tunnel MTU and the smallest RA MTU option accepted."""
MAX_MTU = 65535
MAX_ICMP_ERROR = 1280
"""A generated ICMPv6 error (IPv6 header included) never exceeds the IPv6 minimum MTU."""
RA_RETRANS_TIMER_MS = 2000
RA_HOP_LIMIT = 255
ECHO_HOP_LIMIT = 128
MAX_UDP_PAYLOAD = 65507

AUTH_MIN_LEN = 13
ORIGIN_LEN = 8


def _uint(value: int, size: int, what: str) -> bytes:
    """Big-endian field; out of range is a ValueError naming the field (not OverflowError)."""
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{what} out of range: {value}")
    return value.to_bytes(size, "big")


# --- headers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    """Authentication indicator. miredo never sends or checks client id / auth value."""

    client_id: bytes = b""
    auth_value: bytes = b""
    nonce: bytes = bytes(8)
    confirmation: int = 0

    def pack(self) -> bytes:
        if len(self.nonce) != 8:
            raise ValueError(f"auth nonce must be 8 bytes, got {len(self.nonce)}")
        if len(self.client_id) > 255 or len(self.auth_value) > 255:
            raise ValueError("auth client id / value longer than 255 bytes")
        if not 0 <= self.confirmation <= 255:
            raise ValueError(f"auth confirmation byte out of range: {self.confirmation}")
        return (
            bytes((0, 1, len(self.client_id), len(self.auth_value)))
            + bytes(self.client_id)
            + bytes(self.auth_value)
            + bytes(self.nonce)
            + bytes((self.confirmation,))
        )


class Origin(namedtuple("Origin", "ip port")):
    """Origin indication: the UDP source a server saw, stored clear here, obfuscated on the wire."""

    __slots__ = ()

    ip: str
    port: int

    def pack(self) -> bytes:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"origin port out of range: {self.port}")
        return b"\x00\x00" + obfuscated_mapping(self.ip, self.port)


@dataclass(slots=True)
class Teredo:
    """A parsed Teredo UDP payload.

    `ipv6` is exactly the `40 + payload_length` bytes (what a client/relay writes to the TUN
    device and what a server sends on raw IPv6); `remainder` is everything after the headers,
    trailers included (what a server re-sends over UDP); `trailer_len` = their difference.
    """

    auth: Auth | None
    origin: Origin | None
    ipv6: bytes
    trailer_len: int = 0
    remainder: bytes | None = None

    def __post_init__(self) -> None:
        if self.remainder is None:
            self.remainder = self.ipv6


def parse_datagram(data: bytes) -> Teredo:
    """miredo's receive parser (§2.3): `[auth][origin]ipv6[trailer]`, in that order only.

    Header fields that miredo ignores (client id, auth value) are kept but not checked; a
    non-zero confirmation byte is reported, not rejected (the client treats it as "auth
    failed"). Trailing bytes after `40+plen` are tolerated and counted in `trailer_len`.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParseError("datagram", f"not a byte string: {type(data).__name__}")
        data = bytes(data)
    n = len(data)
    if n < 2:
        raise ParseError("datagram.length", f"{n} bytes, need at least 2")
    pos = 0
    auth = None
    origin = None
    if data[0] == 0 and data[1] == 1:
        if n < AUTH_MIN_LEN:
            raise ParseError("auth.length", f"{n} bytes left, auth header needs 13")
        id_len = data[2]
        au_len = data[3]
        end = AUTH_MIN_LEN + id_len + au_len
        if end > n:
            raise ParseError(
                "auth.id_len", f"client id {id_len} + auth value {au_len} bytes overrun {n} bytes"
            )
        v = 4 + id_len + au_len
        auth = Auth(data[4 : 4 + id_len], data[4 + id_len : v], data[v : v + 8], data[v + 8])
        pos = end
    if n - pos >= 2 and data[pos] == 0 and data[pos + 1] == 0:
        if n - pos < ORIGIN_LEN:
            raise ParseError("origin.length", f"{n - pos} bytes left, origin needs 8")
        origin = Origin(*clear_mapping(data[pos + 2 : pos + 8]))
        pos += ORIGIN_LEN
    left = n - pos
    if left < IPV6_HEADER_LEN:
        raise ParseError("ipv6.length", f"{left} bytes, IPv6 header needs 40")
    if data[pos] >> 4 != 6:
        raise ParseError("ipv6.version", f"version {data[pos] >> 4}, expected 6")
    total = IPV6_HEADER_LEN + ((data[pos + 4] << 8) | data[pos + 5])
    if total > left:
        raise ParseError(
            "ipv6.payload_length", f"header claims {total} bytes, datagram carries {left}"
        )
    rest = data if pos == 0 else data[pos:]
    ipv6 = rest if total == left else rest[:total]
    return Teredo(auth, origin, ipv6, left - total, rest)


def build_datagram(ipv6: bytes, auth: Auth | None = None, origin: Origin | None = None) -> bytes:
    """`[auth][origin]ipv6` — the only header order miredo accepts."""
    if auth is None and origin is None:
        return bytes(ipv6)
    head = b""
    if auth is not None:
        head = auth.pack()
    if origin is not None:
        head += origin.pack()
    return head + bytes(ipv6)


# --- IPv6 header: hot-path accessors ---------------------------------------------------------


def ipv6_ok(pkt: bytes) -> bool:
    """miredo's IPv6 sanity check: ≥ 40 bytes, version 6, 40+plen within the buffer."""
    n = len(pkt)
    return n >= 40 and (pkt[0] >> 4) == 6 and 40 + ((pkt[4] << 8) | pkt[5]) <= n


def ipv6_src(pkt: bytes) -> bytes:
    return pkt[8:24]


def ipv6_dst(pkt: bytes) -> bytes:
    return pkt[24:40]


def ipv6_plen(pkt: bytes) -> int:
    return (pkt[4] << 8) | pkt[5]


def ipv6_next_header(pkt: bytes) -> int:
    return pkt[6]


def ipv6_hop_limit(pkt: bytes) -> int:
    return pkt[7]


def ipv6_tclass(pkt: bytes) -> int:
    return ((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)


def ipv6_flow(pkt: bytes) -> int:
    return ((pkt[1] & 0x0F) << 16) | (pkt[2] << 8) | pkt[3]


def is_bubble(pkt: bytes) -> bool:
    """miredo's test: payload length 0 and next header 59; hop limit and trailers ignored."""
    return len(pkt) >= 40 and pkt[6] == NH_NONE and pkt[4] == 0 and pkt[5] == 0


def build_ipv6(
    src: bytes,
    dst: bytes,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
    tclass: int = 0,
    flow: int = 0,
) -> bytes:
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 source and destination must be 16 bytes each")
    if len(payload) > 0xFFFF:
        raise ValueError(f"IPv6 payload of {len(payload)} bytes needs a jumbogram")
    if not (0 <= next_header <= 255 and 0 <= hop_limit <= 255 and 0 <= tclass <= 255):
        raise ValueError("IPv6 next header, hop limit and traffic class are single bytes")
    if not 0 <= flow <= 0xFFFFF:
        raise ValueError(f"IPv6 flow label out of range: {flow:#x}")
    first = (6 << 28) | (tclass << 20) | flow
    return (
        first.to_bytes(4, "big")
        + len(payload).to_bytes(2, "big")
        + bytes((next_header, hop_limit))
        + bytes(src)
        + bytes(dst)
        + bytes(payload)
    )


_BUBBLE_HEAD = b"\x60\x00\x00\x00\x00\x00\x3b\x00"


def bubble(src: bytes, dst: bytes) -> bytes:
    """The 40-byte bubble miredo sends: plen 0, next header 59, **hop limit 0**, TC/flow 0."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("bubble source and destination must be 16 bytes each")
    return _BUBBLE_HEAD + bytes(src) + bytes(dst)


# --- ICMPv6 ----------------------------------------------------------------------------------


def _ones_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words, folded to 16 bits.

    2**16 ≡ 1 (mod 0xFFFF), so the end-around-carry sum is the whole buffer read as one big
    integer modulo 0xFFFF (with 0xFFFF instead of 0 for non-zero data): one C-level operation
    instead of a Python loop over words.
    """
    if len(data) & 1:
        data += b"\x00"
    v = int.from_bytes(data, "big")
    s = v % 0xFFFF
    if s == 0 and v:
        return 0xFFFF
    return s


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """The checksum to store in `icmp[2:4]`; the field's current content is ignored."""
    icmp = bytes(icmp)
    pseudo = (
        bytes(src) + bytes(dst) + len(icmp).to_bytes(4, "big") + b"\x00\x00\x00" + bytes((58,))
    )
    return ~_ones_sum(pseudo + icmp[:2] + b"\x00\x00" + icmp[4:]) & 0xFFFF


def icmpv6_checksum_ok(pkt: bytes) -> bool:
    """Whether the ICMPv6 checksum of a whole IPv6 packet (no extension headers) is right."""
    if not ipv6_ok(pkt) or pkt[6] != NH_ICMPV6 or ipv6_plen(pkt) < 4:
        return False
    icmp = pkt[40 : 40 + ipv6_plen(pkt)]
    return icmpv6_checksum(pkt[8:24], pkt[24:40], icmp) == int.from_bytes(icmp[2:4], "big")


def build_icmpv6(
    src: bytes,
    dst: bytes,
    type: int,
    code: int,
    body: bytes,
    hop_limit: int = 64,
    tclass: int = 0,
    flow: int = 0,
) -> bytes:
    """A whole IPv6 packet carrying `type code checksum body` with the checksum filled in."""
    if not (0 <= type <= 255 and 0 <= code <= 255):
        raise ValueError("ICMPv6 type and code are single bytes")
    msg = bytes((type, code, 0, 0)) + bytes(body)
    ck = icmpv6_checksum(src, dst, msg)
    msg = msg[:2] + ck.to_bytes(2, "big") + msg[4:]
    return build_ipv6(src, dst, NH_ICMPV6, msg, hop_limit, tclass, flow)


class Icmpv6(namedtuple("Icmpv6", "type code checksum body")):
    """A parsed ICMPv6 message: `body` is everything after type/code/checksum."""

    __slots__ = ()

    type: int
    code: int
    checksum: int
    body: bytes


def parse_icmpv6(pkt: bytes) -> Icmpv6:
    """The ICMPv6 message of an IPv6 packet whose next header is 58 (no extension headers walked,
    like miredo)."""
    pkt = _as_ipv6(pkt)
    if pkt[6] != NH_ICMPV6:
        raise ParseError("ipv6.next_header", f"{pkt[6]}, expected 58 (ICMPv6)")
    plen = ipv6_plen(pkt)
    if plen < 4:
        raise ParseError("icmpv6.length", f"{plen} bytes, need at least 4")
    return Icmpv6(pkt[40], pkt[41], (pkt[42] << 8) | pkt[43], pkt[44 : 40 + plen])


def _as_ipv6(pkt: bytes) -> bytes:
    """Validate an IPv6 packet for the non-hot-path parsers; returns it as `bytes`."""
    if type(pkt) is not bytes:
        if not isinstance(pkt, (bytes, bytearray, memoryview)):
            raise ParseError("ipv6", f"not a byte string: {type(pkt).__name__}")
        pkt = bytes(pkt)
    n = len(pkt)
    if n < 40:
        raise ParseError("ipv6.length", f"{n} bytes, IPv6 header needs 40")
    if pkt[0] >> 4 != 6:
        raise ParseError("ipv6.version", f"version {pkt[0] >> 4}, expected 6")
    if 40 + ipv6_plen(pkt) > n:
        raise ParseError(
            "ipv6.payload_length", f"header claims {40 + ipv6_plen(pkt)} bytes, packet has {n}"
        )
    return pkt


# --- qualification: RS and RA ------------------------------------------------------------------


def router_solicitation(nonce: bytes, src: bytes = LL_CLIENT) -> bytes:
    """The whole 61-byte UDP payload of a miredo RS (E1): auth with `nonce`, no SLLAO, hlim 255."""
    ipv6 = build_icmpv6(src, ALL_ROUTERS, ND_ROUTER_SOLICIT, 0, bytes(4), RA_HOP_LIMIT)
    return build_datagram(ipv6, Auth(nonce=bytes(nonce)))


@dataclass(frozen=True, slots=True)
class RouterAdvertisement:
    """What a client learns from an accepted RA.

    `prefix8` is the PIO's first 8 bytes (Teredo prefix + server IPv4) with the old 3ffe:831f
    prefix already rewritten; `mtu` is the MTU option or None when absent (`link_mtu` applies
    the 1280 default). `nonce`, `confirmation` and `origin` are copied from the datagram.
    """

    prefix8: bytes
    mtu: int | None = None
    nonce: bytes | None = None
    confirmation: int = 0
    origin: Origin | None = None
    retrans_timer: int = 0

    @property
    def prefix(self) -> int:
        return int.from_bytes(self.prefix8[0:4], "big")

    @property
    def server(self) -> str:
        return socket.inet_ntoa(self.prefix8[4:8])

    @property
    def link_mtu(self) -> int:
        return MIN_MTU if self.mtu is None else self.mtu

    def address(self, flags: int) -> bytes:
        """Our Teredo address: PIO prefix + flags + ~origin port + ~origin IPv4 (§3.3)."""
        if self.origin is None:
            raise ValueError("RA carried no origin indication")
        return self.prefix8 + _uint(flags, 2, "Teredo flags") + Origin.pack(self.origin)[2:]


RAInfo = RouterAdvertisement


def router_advertisement(
    nonce: bytes | None,
    origin: Origin,
    prefix32: int,
    server_primary: str,
    mtu: int,
    dst: bytes,
) -> bytes:
    """The whole UDP payload of a miredo server's RA (E2, 117 bytes).

    Always carries an auth header like miredo; without an RS nonce it holds zeros. The PIO
    always names the primary server address, and the RA is sent from the server link-local.
    """
    ra = (
        bytes((0, 0))  # cur hop limit, flags (M=O=0)
        + (0).to_bytes(2, "big")  # router lifetime
        + (0).to_bytes(4, "big")  # reachable time
        + RA_RETRANS_TIMER_MS.to_bytes(4, "big")
    )
    pio = (
        bytes((ND_OPT_PREFIX_INFORMATION, 4, 64, 0x40))
        + b"\xff\xff\xff\xff\xff\xff\xff\xff"  # valid and preferred lifetimes: infinite
        + bytes(4)
        + _uint(prefix32, 4, "Teredo prefix")
        + ipv4_pack(server_primary)
        + bytes(8)
    )
    mtu_opt = bytes((ND_OPT_MTU, 1, 0, 0)) + _uint(mtu, 4, "RA MTU")
    ipv6 = build_icmpv6(
        server_link_local(server_primary),
        dst,
        ND_ROUTER_ADVERT,
        0,
        ra + pio + mtu_opt,
        RA_HOP_LIMIT,
    )
    return build_datagram(ipv6, Auth(nonce=bytes(8) if nonce is None else bytes(nonce)), origin)


def parse_router_advertisement(dgram: Teredo) -> RouterAdvertisement:
    """The RA content checks a miredo client applies (§3.3 steps 4-6).

    Raises ParseError naming the failing field. The caller still matches the nonce and the
    confirmation byte, requires an origin and checks `ra.server` against the server it asked
    (steps 2.1-2.3 and 2.7); `accept_router_advertisement` does all of it.
    """
    pkt = _as_ipv6(dgram.ipv6)
    if pkt[6] != NH_ICMPV6:
        raise ParseError("ipv6.next_header", f"{pkt[6]}, RA needs 58 (ICMPv6)")
    plen = ipv6_plen(pkt)
    if plen < 16:
        raise ParseError("ipv6.payload_length", f"{plen} bytes, an RA needs at least 16")
    if pkt[40] != ND_ROUTER_ADVERT:
        raise ParseError("icmpv6.type", f"{pkt[40]}, expected 134 (router advertisement)")
    if pkt[41] != 0:
        raise ParseError("icmpv6.code", f"{pkt[41]}, expected 0")
    if plen - 16 < 32:
        raise ParseError("ra.options", f"{plen - 16} bytes of options, need at least 32")
    retrans = int.from_bytes(pkt[52:56], "big")
    prefix8: bytes | None = None
    mtu: int | None = None
    pos = 56
    end = 40 + plen
    while end - pos >= 8:
        opt_type = pkt[pos]
        optlen = pkt[pos + 1] * 8
        if optlen == 0:
            raise ParseError("ra.option.length", f"option type {opt_type} with length 0")
        if optlen > end - pos:
            raise ParseError(
                "ra.option.length",
                f"option type {opt_type} of {optlen} bytes overruns the {end - pos} left",
            )
        if opt_type == ND_OPT_PREFIX_INFORMATION:
            if optlen < 32:
                raise ParseError("ra.pio.length", f"{optlen} bytes, need 32")
            if pkt[pos + 2] != 64:
                raise ParseError("ra.pio.prefix_length", f"/{pkt[pos + 2]}, need /64")
            if prefix8 is not None:
                raise ParseError("ra.pio", "more than one prefix information option")
            prefix8 = pkt[pos + 16 : pos + 24]
        elif opt_type == ND_OPT_MTU:
            value = int.from_bytes(pkt[pos + 4 : pos + 8], "big")
            if not MIN_MTU <= value <= MAX_MTU:
                raise ParseError("ra.mtu", f"{value} outside {MIN_MTU}-{MAX_MTU}")
            mtu = value
        pos += optlen
    if prefix8 is None:
        raise ParseError("ra.pio", "no prefix information option")
    if int.from_bytes(prefix8[0:4], "big") == OLD_TEREDO_PREFIX:
        prefix8 = TEREDO_PREFIX.to_bytes(4, "big") + prefix8[4:8]
    if prefix8[0] == 0xFF:
        raise ParseError("ra.pio.prefix", "multicast Teredo prefix")
    return RouterAdvertisement(
        prefix8=prefix8,
        mtu=mtu,
        nonce=dgram.auth.nonce if dgram.auth is not None else None,
        confirmation=dgram.auth.confirmation if dgram.auth is not None else 0,
        origin=dgram.origin,
        retrans_timer=retrans,
    )


def accept_router_advertisement(dgram: Teredo, nonce: bytes, server: str) -> RouterAdvertisement:
    """All of a miredo client's RA validation (§3.3 step 2), in miredo's order.

    `nonce` is the outstanding RS nonce and `server` the IPv4 the RS was sent to. Step 1 (UDP
    source port 3544, auth present, dst fe80::ffff:ffff:ffff) is the caller's dispatch.
    """
    if dgram.auth is None:
        raise ParseError("auth", "RA without authentication header")
    if dgram.auth.nonce != nonce:
        raise ParseError("auth.nonce", "does not match the outstanding router solicitation")
    if dgram.auth.confirmation != 0:
        raise ParseError("auth.confirmation", "authentication with server failed")
    if dgram.origin is None or dgram.origin.ip == "0.0.0.0":
        raise ParseError("origin", "RA without origin indication")
    ra = parse_router_advertisement(dgram)
    if ra.prefix8[4:8] != ipv4_pack(server):
        raise ParseError("ra.pio.server", f"names server {ra.server}, we asked {server}")
    return ra


# --- echo (the ping test) ------------------------------------------------------------------


class Echo(namedtuple("Echo", "type code ident seq data")):
    __slots__ = ()
    type: int  # 128 request, 129 reply
    code: int
    ident: int
    seq: int
    data: bytes


def _echo(
    icmp_type: int, src: bytes, dst: bytes, ident: int, seq: int, data: bytes,
    hop_limit: int, tclass: int, flow: int,
) -> bytes:
    body = _uint(ident, 2, "echo identifier") + _uint(seq, 2, "echo sequence") + bytes(data)
    return build_icmpv6(src, dst, icmp_type, 0, body, hop_limit, tclass, flow)


def echo_request(
    src: bytes,
    dst: bytes,
    ident: int,
    seq: int,
    data: bytes,
    hop_limit: int = ECHO_HOP_LIMIT,
    tclass: int = 0,
    flow: int = 0,
) -> bytes:
    """ICMPv6 echo request; miredo's ping test uses hop limit 128 and 18 data bytes (E7)."""
    return _echo(ICMP6_ECHO_REQUEST, src, dst, ident, seq, data, hop_limit, tclass, flow)


def echo_reply(
    src: bytes,
    dst: bytes,
    ident: int,
    seq: int,
    data: bytes,
    hop_limit: int = 64,
    tclass: int = 0,
    flow: int = 0,
) -> bytes:
    """ICMPv6 echo reply: what a test peer or the simulated native host answers with."""
    return _echo(ICMP6_ECHO_REPLY, src, dst, ident, seq, data, hop_limit, tclass, flow)


def parse_echo(pkt: bytes) -> Echo:
    """An ICMPv6 echo request or reply (type 128/129); anything else raises ParseError."""
    m = parse_icmpv6(pkt)
    if m.type not in (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY):
        raise ParseError("icmpv6.type", f"{m.type}, expected 128 or 129 (echo)")
    if len(m.body) < 4:
        raise ParseError("icmpv6.length", f"echo of {len(m.body) + 4} bytes, need at least 8")
    b = m.body
    return Echo(m.type, m.code, (b[0] << 8) | b[1], (b[2] << 8) | b[3], b[4:])


# --- ICMPv6 errors (§5.9) --------------------------------------------------------------------

_ERROR_QUOTE_MAX = MAX_ICMP_ERROR - IPV6_HEADER_LEN - 8


def icmp_error_allowed(offending: bytes) -> bool:
    """Whether §5.9 lets us answer `offending` with an ICMPv6 error at all.

    Not for runts, ICMPv6 errors (next header 58, type < 128; extension headers not walked),
    multicast destinations, or multicast/unspecified sources — so errors never storm.
    """
    if len(offending) < 40:
        return False
    if offending[6] == NH_ICMPV6 and (len(offending) < 41 or offending[40] < 128):
        return False
    if offending[24] == 0xFF or offending[8] == 0xFF:
        return False
    return offending[8:24] != bytes(16)


def dest_unreachable(
    src: bytes, dst: bytes, code: int, offending: bytes, hop_limit: int = 64
) -> bytes:
    """Destination Unreachable quoting as much of `offending` as keeps the packet ≤ 1280 bytes."""
    return build_icmpv6(
        src,
        dst,
        ICMP6_DST_UNREACH,
        code,
        bytes(4) + bytes(offending[:_ERROR_QUOTE_MAX]),
        hop_limit,
    )


def packet_too_big(
    src: bytes, dst: bytes, mtu: int, offending: bytes, hop_limit: int = 64
) -> bytes:
    """Packet Too Big (type 2) with `mtu`, quoting as much of `offending` as fits in 1280."""
    return build_icmpv6(
        src,
        dst,
        ICMP6_PACKET_TOO_BIG,
        0,
        _uint(mtu, 4, "packet too big MTU") + bytes(offending[:_ERROR_QUOTE_MAX]),
        hop_limit,
    )


__all__ = [
    "Auth",
    "Echo",
    "Icmpv6",
    "Origin",
    "RAInfo",
    "RouterAdvertisement",
    "Teredo",
    "accept_router_advertisement",
    "bubble",
    "build_datagram",
    "build_icmpv6",
    "build_ipv6",
    "dest_unreachable",
    "echo_reply",
    "echo_request",
    "icmp_error_allowed",
    "icmpv6_checksum",
    "icmpv6_checksum_ok",
    "ipv6_dst",
    "ipv6_flow",
    "ipv6_hop_limit",
    "ipv6_next_header",
    "ipv6_ok",
    "ipv6_plen",
    "ipv6_src",
    "ipv6_tclass",
    "is_bubble",
    "packet_too_big",
    "parse_datagram",
    "parse_echo",
    "parse_icmpv6",
    "parse_router_advertisement",
    "router_advertisement",
    "router_solicitation",
]
