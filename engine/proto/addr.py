"""Teredo addresses (RFC 4380 §4, RFC 5991 flags) and the IPv4/IPv6 classification miredo uses.

Representations follow docs/contracts.md: IPv6 addresses are 16-byte `bytes`, IPv4 addresses
are dotted-quad `str` (what the socket layer gives and takes), a mapping is `(ip, port)`.
The helpers that run per packet (`mapping_of`, `server_of`, `has_prefix`, the IPv6 class tests)
work on slices and ints only.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from .errors import ParseError
from .records import dataclass

TEREDO_PREFIX = 0x20010000
"""The global Teredo service prefix 2001::/32, as the big-endian int of bytes 0-3."""
OLD_TEREDO_PREFIX = 0x3FFE831F
"""Pre-RFC experimental prefix; a miredo client rewrites it to `TEREDO_PREFIX` on receipt."""
TEREDO_PORT = 3544

CONE_FLAG = 0x8000
"""RFC 4380 "C" bit. miredo clients never set it; servers still route RAs by it (§7.3)."""
RANDOM_FLAGS_MASK = 0x3CFF
"""RFC 5991: the 12 random "A" bits; C, R, U and G stay zero."""


def random_flags(randbits: Callable[[int], int]) -> int:
    """Flags for a new qualified address; the caller passes `secrets.randbits` (or a test RNG)."""
    return randbits(16) & RANDOM_FLAGS_MASK


# --- IPv4 text <-> packed/int ---------------------------------------------------------------

def ipv4_pack(ip: str) -> bytes:
    """Strict dotted-quad to 4 bytes (inet_aton would also take "127.1"; we do not)."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError, ValueError):
        raise ValueError(f"not an IPv4 address: {ip!r}") from None


def ipv4_to_int(ip: str) -> int:
    return int.from_bytes(ipv4_pack(ip), "big")


def int_to_ipv4(n: int) -> str:
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def ipv6_text(addr16: bytes) -> str:
    """Compressed text form of a 16-byte address (for logs and status output)."""
    return socket.inet_ntop(socket.AF_INET6, bytes(addr16))


def ipv6_pack(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except (OSError, TypeError, ValueError):
        raise ValueError(f"not an IPv6 address: {text!r}") from None


# --- the exact miredo "global unicast IPv4" table (§1.6) --------------------------------------

# (network, mask) pairs; anything that matches is NOT global. Deliberately no more than miredo
# rejects: TEST-NETs, 100.64/10, 198.18/15 and 240/4 must stay usable in labs.
_NON_GLOBAL_V4: tuple[tuple[int, int], ...] = (
    (0x00000000, 0xFF000000),  # 0.0.0.0/8 "this network"
    (0x0A000000, 0xFF000000),  # 10.0.0.0/8
    (0x7F000000, 0xFF000000),  # 127.0.0.0/8
    (0xA9FE0000, 0xFFFF0000),  # 169.254.0.0/16
    (0xAC100000, 0xFFF00000),  # 172.16.0.0/12
    (0xC0A80000, 0xFFFF0000),  # 192.168.0.0/16
    (0xC0586300, 0xFFFFFF00),  # 192.88.99.0/24 6to4 anycast
    (0xE0000000, 0xF0000000),  # 224.0.0.0/4 class D
    (0xFFFFFFFF, 0xFFFFFFFF),  # limited broadcast
)


def is_global_unicast_ipv4_int(n: int) -> bool:
    """`is_global_unicast_ipv4` on a host-order int (for callers that already hold one).

    Unrolled by first octet because the server runs it on every datagram; `_NON_GLOBAL_V4` is
    the readable form of the same table (the unit tests check one against the other).
    """
    a = n >> 24
    if a == 0 or a == 10 or a == 127 or 224 <= a <= 239 or n == 0xFFFFFFFF:
        return False
    if a == 169:
        return (n >> 16) & 0xFF != 254
    if a == 172:
        return not 16 <= (n >> 16) & 0xFF <= 31
    if a == 192:
        return (n >> 16) & 0xFF != 168 and n >> 8 != 0xC05863
    return True


def is_global_unicast_ipv4(ip: str) -> bool:
    """miredo's `is_ipv4_global_unicast`; raises ValueError for text that is not an IPv4."""
    return is_global_unicast_ipv4_int(ipv4_to_int(ip))


# --- IPv6 classes used by the roles --------------------------------------------------------

def is_multicast6(addr16: bytes) -> bool:
    return addr16[0] == 0xFF


def is_link_local6(addr16: bytes) -> bool:
    """fe80::/10."""
    return addr16[0] == 0xFE and (addr16[1] & 0xC0) == 0x80


def is_loopback6(addr16: bytes) -> bool:
    return addr16 == _LOOPBACK


def is_unspecified6(addr16: bytes) -> bool:
    return addr16 == _UNSPECIFIED


def is_global6(addr16: bytes) -> bool:
    """The miredo server's A3 notion of "global": not ::, ::1, fe80::/10 or ff00::/8.

    Site-local and ULA deliberately count as global, as in miredo.
    """
    return not (
        addr16[0] == 0xFF
        or (addr16[0] == 0xFE and (addr16[1] & 0xC0) == 0x80)
        or addr16 in (_UNSPECIFIED, _LOOPBACK)
    )


_UNSPECIFIED = bytes(16)
_LOOPBACK = bytes(15) + b"\x01"


def is_valid_prefix(prefix: int) -> bool:
    """miredo accepts any 32-bit Teredo prefix except a multicast one (§1.5)."""
    return 0 <= prefix <= 0xFFFFFFFF and (prefix >> 24) != 0xFF


# --- Teredo addresses ---------------------------------------------------------------------

def build_teredo(prefix: int, server: str, flags: int, port: int, client: str) -> bytes:
    """prefix | server (clear) | flags | ~port | ~client — the 16 address bytes."""
    if not 0 <= prefix <= 0xFFFFFFFF:
        raise ValueError(f"Teredo prefix out of range: {prefix:#x}")
    if not 0 <= flags <= 0xFFFF:
        raise ValueError(f"Teredo flags out of range: {flags:#x}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"UDP port out of range: {port}")
    return (
        prefix.to_bytes(4, "big")
        + ipv4_pack(server)
        + flags.to_bytes(2, "big")
        + obfuscated_mapping(client, port)
    )


def obfuscated_mapping(ip: str, port: int) -> bytes:
    """``~port ~ip``: the 6 bytes a Teredo address (bytes 10-15) and an origin indication
    (bytes 2-7) carry.  RFC 4380 inverts them so that NATs which rewrite IPv4 addresses they
    find in payloads leave the mapping alone; the caller checks the port's range."""
    return ((port ^ 0xFFFF) << 32 | (ipv4_to_int(ip) ^ 0xFFFFFFFF)).to_bytes(6, "big")


def clear_mapping(tail6: bytes) -> tuple[str, int]:
    """The ``(ip, port)`` of 6 obfuscated mapping bytes (the inverse of `obfuscated_mapping`)."""
    return (
        socket.inet_ntoa((int.from_bytes(tail6[2:6], "big") ^ 0xFFFFFFFF).to_bytes(4, "big")),
        int.from_bytes(tail6[0:2], "big") ^ 0xFFFF,
    )


def mapped_ipv4_int(addr16: bytes) -> int:
    """The clear IPv4 a Teredo address embeds, as an int: per-packet checks (is it global, is
    it on our subnet) need no text form."""
    return int.from_bytes(addr16[12:16], "big") ^ 0xFFFFFFFF


#: The decimal text of each obfuscated octet's clear value: ``_CLEAR_OCTET[b] == str(b ^ 255)``.
_CLEAR_OCTET = tuple(str(b ^ 0xFF) for b in range(256))


def mapping_of(addr16: bytes) -> tuple[str, int]:
    """The (ip, port) a Teredo address embeds, de-obfuscated: the same text as `clear_mapping`
    (and `recvfrom`), joined from per-octet strings because a peer's mapping is derived from
    its key on every packet to it (engine/proto/peers.py): 0.18 us against 0.65 through
    `inet_ntoa` (docs/performance.md, "The peer table")."""
    o = _CLEAR_OCTET
    return (
        f"{o[addr16[12]]}.{o[addr16[13]]}.{o[addr16[14]]}.{o[addr16[15]]}",
        (addr16[10] << 8 | addr16[11]) ^ 0xFFFF,
    )


def secondary_server_address(primary: str) -> str | None:
    """The default secondary address of a Teredo server: primary + 1, as miredo does and as
    Windows clients assume when they test the NAT type; None past 255.255.255.255."""
    n = ipv4_to_int(primary) + 1
    return int_to_ipv4(n) if n <= 0xFFFFFFFF else None


def server_of(addr16: bytes) -> str:
    """The (clear) server IPv4 in bytes 4-7 of a Teredo address."""
    return socket.inet_ntoa(bytes(addr16[4:8]))


def has_prefix(addr16: bytes, prefix: int) -> bool:
    """"Is Teredo" = bytes 0-3 equal the configured or learned prefix (never a fixed 2001::)."""
    return int.from_bytes(addr16[0:4], "big") == prefix


def flags_of(addr16: bytes) -> int:
    return int.from_bytes(addr16[8:10], "big")


@dataclass(frozen=True, slots=True)
class TeredoAddress:
    """A decoded Teredo address; `port` and `client` are the clear (de-obfuscated) mapping."""

    prefix: int
    server: str
    flags: int
    port: int
    client: str

    def packed(self) -> bytes:
        return build_teredo(self.prefix, self.server, self.flags, self.port, self.client)

    @classmethod
    def parse(cls, b: bytes) -> TeredoAddress:
        """Decode any 16 bytes (every 128-bit value decodes); other lengths raise ParseError."""
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise ParseError("teredo.address", f"expected bytes, got {type(b).__name__}")
        if len(b) != 16:
            raise ParseError("teredo.address", f"length {len(b)}, need 16")
        ip, port = mapping_of(b)
        return cls(int.from_bytes(b[0:4], "big"), server_of(b), flags_of(b), port, ip)

    @classmethod
    def from_text(cls, text: str) -> TeredoAddress:
        try:
            return cls.parse(ipv6_pack(text))
        except ValueError as e:  # ParseError is a ValueError too
            raise ParseError("teredo.address", str(e)) from None

    @property
    def mapping(self) -> tuple[str, int]:
        return (self.client, self.port)

    @property
    def cone(self) -> bool:
        return bool(self.flags & CONE_FLAG)

    def __str__(self) -> str:
        return ipv6_text(self.packed())


# --- well-known link-local addresses (§1.4) -------------------------------------------------

LL_CLIENT = bytes.fromhex("fe80000000000000" "0000ffffffffffff")
"""fe80::ffff:ffff:ffff — source of every miredo RS and the RA destination a client expects."""
LL_CONE = bytes.fromhex("fe80000000000000" "80005445" "5245444f")
"""fe80::8000:5445:5245:444f — the Windows XP "cone" RS source (0x8000 + ASCII "TEREDO")."""
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
LL_PREFIX = bytes.fromhex("fe80000000000000")


def server_link_local(primary_ipv4: str) -> bytes:
    """fe80::8000:f227:<~primary> — the source of a miredo server's RAs (cone bit, ~3544)."""
    return (
        LL_PREFIX
        + CONE_FLAG.to_bytes(2, "big")
        + obfuscated_mapping(primary_ipv4, TEREDO_PORT)
    )


__all__ = [
    "ALL_NODES",
    "ALL_ROUTERS",
    "CONE_FLAG",
    "LL_CLIENT",
    "LL_CONE",
    "LL_PREFIX",
    "OLD_TEREDO_PREFIX",
    "RANDOM_FLAGS_MASK",
    "TEREDO_PORT",
    "TEREDO_PREFIX",
    "TeredoAddress",
    "build_teredo",
    "clear_mapping",
    "flags_of",
    "has_prefix",
    "int_to_ipv4",
    "ipv4_pack",
    "ipv4_to_int",
    "ipv6_pack",
    "ipv6_text",
    "is_global6",
    "is_global_unicast_ipv4",
    "is_global_unicast_ipv4_int",
    "is_link_local6",
    "is_multicast6",
    "is_unspecified6",
    "is_valid_prefix",
    "mapped_ipv4_int",
    "mapping_of",
    "obfuscated_mapping",
    "random_flags",
    "secondary_server_address",
    "server_link_local",
    "server_of",
]
