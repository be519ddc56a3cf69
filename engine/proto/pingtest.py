"""The client's direct IPv6 connectivity test (spec §5.7, miredo's "ping test").

Before a client talks to a native IPv6 host it must learn which relay serves that host: it sends
an ICMPv6 echo request through its own server; the host's echo reply comes back through the
host's nearest relay, and the UDP source of that reply is the mapping the client then trusts.

The echo payload authenticates the reply so that nobody can make us trust a relay by sending a
forged echo reply: 18 bytes after the 8-byte ICMPv6 header, as miredo sends --

    identifier = our 16-bit id, sequence = low 16 bits of the timestamp,
    data = high 16 bits of the timestamp + a 16-byte keyed hash of (src, dst, id, timestamp)

-- well under the 88-byte limit a miredo server enforces on relayed ICMPv6.  Only the peer's
verbatim echo matters for interop, so the hash is keyed BLAKE2s rather than miredo's HMAC-MD5.
A reply is accepted for 30 s.  miredo also accepts a Destination Unreachable that quotes our
echo request when it comes from the host we pinged (a host that refuses pings still proves the
path); that kludge is kept.
"""

from __future__ import annotations

try:  # hashlib's own blake2s; `hashlib` itself would also load OpenSSL (docs/performance.md)
    from _blake2 import blake2s
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2s

from .wire import ICMP6_DST_UNREACH, ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, NH_ICMPV6, echo_request

#: ICMPv6 echo payload length (header 8 + 18 bytes of data)
PING_PLEN = 26
#: how long a ping test reply stays acceptable (seconds)
PING_LIFETIME = 30
#: miredo's hop limit for the ping test
PING_HOP_LIMIT = 128


class PingTest:
    """Builds and verifies authenticated echo requests.  ``key`` is secret (from
    ``token_bytes``); ``ident`` is the 16-bit identifier (miredo uses its pid)."""

    __slots__ = ("_key", "ident")

    def __init__(self, key: bytes, ident: int) -> None:
        if len(key) < 16:
            raise ValueError(f"pingtest: key must be at least 16 bytes, got {len(key)}")
        self._key = bytes(key[:32])
        self.ident = ident & 0xFFFF

    def _mac(self, src: bytes, dst: bytes, ts: int) -> bytes:
        h = blake2s(key=self._key, digest_size=16, person=b"tping")
        h.update(bytes(src))
        h.update(bytes(dst))
        h.update(self.ident.to_bytes(2, "big"))
        h.update(ts.to_bytes(4, "big"))
        return h.digest()

    def request(self, src: bytes, dst: bytes, t: int) -> bytes:
        """The echo request from ``src`` (our Teredo address) to ``dst`` at whole second ``t``."""
        ts = t & 0xFFFFFFFF
        data = (ts >> 16).to_bytes(2, "big") + self._mac(src, dst, ts)
        return echo_request(src, dst, self.ident, ts & 0xFFFF, data, PING_HOP_LIMIT)

    def _check_echo(self, icmp: bytes, us: bytes, them: bytes, t: int) -> bool:
        """``icmp`` is an echo message (≥ 26 bytes) that we sent from ``us`` to ``them``."""
        if (icmp[4] << 8 | icmp[5]) != self.ident:
            return False
        ts = (icmp[8] << 24) | (icmp[9] << 16) | (icmp[6] << 8) | icmp[7]
        if (t - ts) & 0xFFFFFFFF >= PING_LIFETIME:
            return False
        return bytes(icmp[10:26]) == self._mac(us, them, ts)

    def verify(self, pkt: bytes, us: bytes, t: int) -> bool:
        """Whether ``pkt`` (a whole IPv6 packet from the tunnel path) answers one of our ping
        tests: an echo reply to us, or a Destination Unreachable from the pinged host quoting
        our echo request."""
        if len(pkt) < 40 + PING_PLEN or pkt[6] != NH_ICMPV6:
            return False
        plen = pkt[4] << 8 | pkt[5]
        if plen < PING_PLEN:
            return False
        typ = pkt[40]
        if typ == ICMP6_ECHO_REPLY and pkt[41] == 0:
            if pkt[24:40] != us:
                return False
            return self._check_echo(pkt[40 : 40 + PING_PLEN], us, pkt[8:24], t)
        if typ == ICMP6_DST_UNREACH:
            inner = pkt[48 : 40 + plen]
            if len(inner) < 40 + PING_PLEN:
                return False
            if (inner[4] << 8 | inner[5]) != PING_PLEN or inner[6] != NH_ICMPV6:
                return False
            if inner[8:24] != us or inner[40] != ICMP6_ECHO_REQUEST:
                return False
            # the error must come from the host we pinged
            if pkt[8:24] != inner[24:40]:
                return False
            return self._check_echo(inner[40 : 40 + PING_PLEN], us, inner[24:40], t)
        return False
