"""Parsers for the value types of miredo's config files.

Each parser takes the value token and returns the typed value or raises `BadValue` with a
message that says what was expected; the caller adds `file:line: Directive:` in front.
"""

from __future__ import annotations

import re
import socket
import warnings
from collections.abc import Callable

from engine.proto.addr import ipv4_pack, ipv6_pack, ipv6_text

# `string`'s constants, spelt out: the module itself is one more import before the first packet
DIGITS = "0123456789"
HEXDIGITS = "0123456789abcdefABCDEF"
PUNCTUATION = r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""

Resolver = Callable[[str], str]
"""host name -> dotted IPv4; raises OSError (e.g. socket.gaierror) when it cannot resolve."""


class BadValue(ValueError):
    """A value that does not fit its directive; the message is one line."""


def system_resolver(host: str) -> str:
    """What miredo does for a hostname value: getaddrinfo(AF_INET), first address."""
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"no IPv4 address for {host}")
    return str(infos[0][4][0])


# --- integers ------------------------------------------------------------------------------

def strtoul0(text: str) -> tuple[int, int]:
    """C `strtoul(text, &end, 0)` for the characters miredo can see: (value, end index).

    Base 0 means `0x` -> hex and a leading `0` -> octal, so `0x0DDA` and `06724` both give
    3546 and `08` stops after the `0`. A `-` negates in unsigned arithmetic (C does the same),
    which the callers' range check then rejects; no digits at all gives (0, 0).
    """
    i = 0
    negative = False
    if text[:1] in ("+", "-"):
        negative = text[0] == "-"
        i = 1
    if text[i : i + 2].lower() == "0x" and text[i + 2 : i + 3] in tuple(HEXDIGITS):
        base, i = 16, i + 2
    elif text[i : i + 1] == "0":
        base = 8
    else:
        base = 10
    digits = DIGITS[:base] if base <= 10 else HEXDIGITS
    start = i
    while i < len(text) and text[i] in digits:
        i += 1
    if i == start:
        return 0, 0
    value = int(text[start:i], base)
    if negative and value:
        value = (1 << 64) - value
    return value, i


def parse_int16(text: str) -> int:
    """miredo's `miredo_conf_get_int16`: strtoul base 0, no trailing junk, at most 65535."""
    value, end = strtoul0(text)
    if end != len(text):
        raise BadValue(
            f"expected an integer (decimal, 0x hex or 0 octal), got {text!r}"
        )
    if value > 0xFFFF:
        raise BadValue(f"{text} is out of range (expected 0-65535)")
    return value


def parse_port(text: str) -> int:
    return parse_int16(text)


def parse_mtu(text: str) -> int:
    value = parse_int16(text)
    if value < 1280:
        raise BadValue(f"MTU {value} is out of range (expected 1280-65535; IPv6 needs 1280)")
    return value


# --- rate limits (teredo-engine's server directives) -----------------------------------------

MAX_RATE = 10_000_000.0
"""Above any real packet rate; a bigger number is surely a typo (use `off` to disable)."""
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_rate(text: str) -> tuple[float | None, float]:
    """`RATE[/BURST]` packets per second (burst: how many may come at once, default RATE,
    at least 1), or `off` for no limit: (rate, burst), rate None when off."""
    if text.lower() in ("off", "unlimited"):
        return None, 1.0
    rate_text, _, burst_text = text.partition("/")
    for part in (rate_text, burst_text) if burst_text else (rate_text,):
        if not _NUMBER.fullmatch(part):
            raise BadValue(f"expected RATE or RATE/BURST in packets per second (e.g. 20/50), "
                           f"or off; got {text!r}")
    rate = float(rate_text)
    burst = float(burst_text) if burst_text else max(rate, 1.0)
    if not 0 < rate <= MAX_RATE:
        raise BadValue(f"rate {rate_text} is out of range (expected more than 0, at most "
                       f"{MAX_RATE:.0f}; off disables the limit)")
    if not 1 <= burst <= MAX_RATE:
        raise BadValue(f"burst {burst_text} is out of range (expected 1-{MAX_RATE:.0f})")
    return rate, burst


def parse_on_off(text: str) -> bool:
    word = parse_keyword(text, ("on", "off"))
    return word == "on"


def parse_count(text: str, low: int, high: int) -> int:
    """A decimal count within [low, high] (no strtoul quirks: this is our directive)."""
    if not text.isdigit():
        raise BadValue(f"expected a whole number from {low} to {high}, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadValue(f"{value} is out of range (expected {low}-{high})")
    return value


_SIZE = re.compile(r"([0-9]+)([kmg]?)", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30}


def size_text(n: int) -> str:
    """`64M` for 64 MiB: the largest binary suffix that divides the value exactly."""
    for suffix, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def parse_size(text: str, low: int, high: int) -> int:
    """A byte count with an optional binary suffix (`K`, `M`, `G`: 1024-based), within
    [low, high]; our directive, so plain decimal digits (no strtoul quirks)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise BadValue(
            f"expected a size in bytes with an optional K, M or G suffix (e.g. 64M), got {text!r}"
        )
    value = int(m.group(1)) << _SIZE_SHIFT[m.group(2).lower()]
    if not low <= value <= high:
        raise BadValue(
            f"{text} is out of range (expected {size_text(low)}-{size_text(high)})"
        )
    return value


# --- IPv4 addresses and host names ---------------------------------------------------------

_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_INET_ATON_CHARS = re.compile(r"[0-9][0-9a-fA-FxX.]*")


def ipv4_literal(text: str) -> str | None:
    """Dotted IPv4 text as the resolver would take it numerically, or None for a name.

    A strict dotted quad is taken as is. The short forms getaddrinfo also accepts through
    inet_aton (`127.1`, `0x7f.0.0.1`) are normalised to a dotted quad without any lookup.
    """
    try:
        ipv4_pack(text)  # strict: no leading zeros or short forms, so already canonical
        return text
    except ValueError:
        pass
    if _INET_ATON_CHARS.fullmatch(text):
        try:
            return socket.inet_ntoa(socket.inet_aton(text))
        except OSError:
            return None
    return None


def parse_ipv4_host(text: str, resolver: Resolver | None) -> str:
    """An IPv4 literal or a host name; a name is resolved only when `resolver` is given.

    Without a resolver only the syntax of a name is checked and the name itself is returned:
    used for values the command line overrides, which must not make start-up depend on DNS.
    """
    literal = ipv4_literal(text)
    if literal is not None:
        return literal
    if not _HOSTNAME.fullmatch(text) or text.replace(".", "").isdigit():
        raise BadValue(f"expected an IPv4 address or a host name, got {text!r}")
    if resolver is None:
        return text
    try:
        address = resolver(text)
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise BadValue(f"cannot resolve {text!r} to an IPv4 address ({reason})") from None
    literal = ipv4_literal(address)
    if literal is None:
        raise BadValue(f"{text!r} resolved to {address!r}, which is not an IPv4 address")
    return literal


def parse_netmask(text: str) -> str:
    """A dotted IPv4 mask. miredo reads it like an address; a name makes no sense here."""
    literal = ipv4_literal(text)
    if literal is None:
        raise BadValue(f"expected a dotted IPv4 netmask such as 255.255.255.0, got {text!r}")
    return literal


# --- IPv6 prefix ---------------------------------------------------------------------------

def parse_prefix(text: str) -> tuple[int, bool]:
    """An IPv6 address whose first 32 bits are the Teredo prefix: (prefix, had_more_bits).

    miredo resolves it with getaddrinfo(AF_INET6) and keeps 32 bits; a multicast (ff..) prefix
    is fatal there and here.
    """
    if "%" in text or "/" in text:
        raise BadValue(
            f"expected an IPv6 address such as 2001:0:: (no /length, no %zone), got {text!r}"
        )
    try:
        value = int.from_bytes(ipv6_pack(text), "big")
    except ValueError:
        raise BadValue(f"expected an IPv6 address such as 2001:0::, got {text!r}") from None
    prefix = value >> 96
    if prefix >> 24 == 0xFF:
        raise BadValue(f"{text} is a multicast prefix (ff00::/8); a Teredo prefix must be unicast")
    return prefix, bool(value & ((1 << 96) - 1))


def prefix_text(prefix: int) -> str:
    return ipv6_text((prefix << 96).to_bytes(16, "big"))


# --- keywords ------------------------------------------------------------------------------

SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
    "lpr", "mail", "news", "syslog", "user", "uucp",
)  # fmt: skip


def parse_keyword(text: str, allowed: tuple[str, ...]) -> str:
    """Case-insensitive keyword -> its lower-case form (miredo compares with strcasecmp)."""
    word = text.lower()
    if word not in allowed:
        raise BadValue(f"expected one of {', '.join(allowed)}; got {text!r}")
    return word


def parse_facility(text: str) -> str:
    return parse_keyword(text, SYSLOG_FACILITIES)


# --- interface names, regular expressions, paths -------------------------------------------

IFNAMSIZ = 16


def parse_ifname(text: str) -> str:
    """A Linux interface name as the kernel's dev_valid_name() takes it."""
    size = len(text.encode())
    if size >= IFNAMSIZ:
        raise BadValue(
            f"interface name {text!r} is {size} bytes long; Linux allows at most {IFNAMSIZ - 1}"
        )
    if text in (".", "..") or "/" in text or ":" in text:
        raise BadValue(f"{text!r} is not a valid interface name (no '/', ':', '.' or '..')")
    return text


_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "xdigit": "0-9A-Fa-f", "space": r" \t\n\r\f\v", "blank": r" \t",
    "punct": re.escape(PUNCTUATION), "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}  # fmt: skip
_CLASS_REF = re.compile(r"\[:([a-z]*):\]")


def parse_regex(text: str) -> re.Pattern[str]:
    """`DiscoveryInterfaces`: miredo uses a POSIX extended regex, searched unanchored.

    Python's `re` reads the common ERE syntax the same way; the POSIX bracket classes
    (`[[:digit:]]` ...) are translated first, since Python would read them as plain sets.
    """
    def class_of(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in _POSIX_CLASSES:
            raise BadValue(f"unknown character class [:{name}:] in regular expression {text!r}")
        return _POSIX_CLASSES[name]

    pattern = _CLASS_REF.sub(class_of, text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(pattern)
    except (re.error, FutureWarning) as e:
        raise BadValue(f"invalid regular expression {text!r}: {e}") from None


SUN_PATH_MAX = 107
"""sockaddr_un.sun_path is 108 bytes including the terminating NUL."""


def parse_socket_path(text: str) -> str:
    if not text.startswith("/"):
        raise BadValue(f"expected an absolute path for a unix socket, got {text!r}")
    if len(text.encode()) > SUN_PATH_MAX:
        raise BadValue(f"socket path is longer than {SUN_PATH_MAX} bytes (the unix socket limit)")
    return text
