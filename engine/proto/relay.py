"""The Teredo relay role (spec §6): forwards between native IPv6 (the TUN device) and Teredo
clients (UDP), with no qualification and no Teredo address of its own.

A relay learns a client by sending to it (T8): the first packet towards a client is queued
and an indirect bubble goes through the client's server (plus a direct one for the deprecated
``restricted`` type); the client's answer bubble makes it trusted and flushes the queue.
Packets from a mapping that does not match the Teredo source are dropped; non-Teredo sources
are dropped.  The hop limit is left to the kernel.

A restarted relay (issue 9 flaw 9)
----------------------------------
miredo drops every packet from a Teredo source it never sent to.  After a relay restart that
is every client: a client keeps sending to the relay its peer entry names until that entry
expires, 30 s after the last packet it received, so the clients of a restarted relay were cut
off for 30 s.  Here a data packet from an unknown Teredo source whose UDP source is the
mapping written in the address (R9a, the anti-spoofing check, unchanged) starts the same
verification T8 uses instead of being dropped: the packet is queued with its UDP source on a
new pending entry (mapping ``NO_MAPPING`` until proven) and an indirect bubble goes through
the client's server, which forwards it to the mapping in the address.  Only the answer, a
bubble to our keyed token (R9d), proves that the sender receives at that mapping; then the
entry is trusted and the queue flushed, packets from another UDP source thrown away.  Later
packets of the same source are queued (1280 bytes), and a mapping match alone never trusts
such an entry.  A spoofer who cannot receive at the mapping gets what any IPv6 host already
gets by sending to a Teredo address through us: one pending entry in the byte budget (evicted
first) and at most four 40-byte bubbles to a port 3544 per 300 s, for a datagram at least as
large; new verifications are also limited relay-wide (`VERIFY_RATE`).  Nothing it sends is
forwarded.  A bubble from an unknown source is still dropped: it carries nothing to forward.

The data path itself lives in :mod:`engine.proto.tunnel`; this module fixes its parameters
and adds the status report.

ICMPv6 errors (§5.9) are written to the TUN device, so their source must be an address the
kernel will forward to a native sender: miredo's raw socket lets the kernel pick one of the
host's global addresses, and the runtime hands us that list (`set_icmp_sources`).  Each
error takes the one sharing the longest prefix with the offending packet's source (RFC 6724
rule 8, what the kernel's choice amounts to on a host with a few addresses).  Without any,
errors keep the link-local source, which only reaches senders on the relay host itself.
"""

from __future__ import annotations

from collections.abc import Callable

from . import entropy
from .addr import (
    LL_CLIENT,
    TEREDO_PORT,
    TEREDO_PREFIX,
    ipv6_text,
    is_global_unicast_ipv4_int,
    mapping_of,
    server_of,
)
from .icmp_limit import IcmpErrorLimiter
from .peers import (
    DEFAULT_CAPACITY,
    NEVER,
    NO_MAPPING,
    RELAY_GENERATION,
    RELAY_MEMORY_LIMIT,
    SEND,
    Peer,
)
from .ratelimit import GlobalLimiter, Rate
from .role import Endpoint
from .tunnel import TeredoTunnel
from .wire import bubble

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from typing import Any

    from engine.config.model import EngineConfig

CONE_OF_RELAY_TYPE = {"relay": True, "cone": True, "restricted": False}
"""The RelayType words that make a relay, and whether each is a cone relay (indirect bubbles
only) or a restricted one (direct + indirect, deprecated); the config's list of every
RelayType word is `engine.config.directives.RELAY_TYPE_WORDS`."""

VERIFY_RATE = Rate(2000, 10000)
"""New verifications of unknown sources (one bubble each), relay-wide: a restart of a relay
serving 10,000 active clients is absorbed at once and 2,000 more per second, while a spoofed
flood costs at most 80 KB/s of bubbles.  A packet over the limit is dropped without an entry
(``verify_rate_limited``); the client's next packet tries again."""


class RelayRole(TeredoTunnel):
    """``relay_type`` is the config word (``relay``, ``cone`` or ``restricted``)."""

    def __init__(
        self,
        *,
        relay_type: str = "cone",
        prefix: int = TEREDO_PREFIX,
        mtu: int = 1280,
        token_bytes: Callable[[int], bytes] = entropy.token_bytes,
        capacity: int = DEFAULT_CAPACITY,
        generation: int = RELAY_GENERATION,
        memory_limit: int = RELAY_MEMORY_LIMIT,
        icmp_limiter: IcmpErrorLimiter | None = None,
        icmp_source: bytes = LL_CLIENT,
        now: float = 0.0,
    ) -> None:
        if relay_type not in CONE_OF_RELAY_TYPE:
            raise ValueError(
                f"relay: RelayType {relay_type!r}: expected one of {', '.join(CONE_OF_RELAY_TYPE)}"
            )
        super().__init__(
            prefix=prefix,
            cone=CONE_OF_RELAY_TYPE[relay_type],
            token_bytes=token_bytes,
            capacity=capacity,
            generation=generation,
            memory_limit=memory_limit,
            icmp_limiter=icmp_limiter,
            icmp_source=icmp_source,
        )
        self.relay_type = relay_type
        self.mtu = mtu
        self.started = now
        self._last_now = now
        self._link_local_source = icmp_source
        self.icmp_sources: list[bytes] = []
        self.verify_limit = GlobalLimiter(VERIFY_RATE, now)
        #: unknown sources whose verification started, and those proven by their answer
        self.verify_attempts = 0
        self.verify_proven = 0

    @classmethod
    def from_config(cls, cfg: EngineConfig, **kw: Any) -> RelayRole:
        """Build from a relay's config (``RelayType``, ``Prefix``, ``InterfaceMTU``,
        ``PeerMemoryLimit``); keyword arguments (``token_bytes``, ``now``...) pass through."""
        if cfg.peer_memory_limit is not None:
            kw.setdefault("memory_limit", cfg.peer_memory_limit)
        return cls(relay_type=cfg.relay_type, prefix=cfg.prefix, mtu=cfg.interface_mtu, **kw)

    def set_icmp_sources(self, sources: list[bytes]) -> None:
        """The host's usable global IPv6 addresses (the runtime watches them change)."""
        self.icmp_sources = [bytes(a) for a in sources if len(a) == 16]
        self.icmp_source = self.icmp_sources[0] if self.icmp_sources else self._link_local_source

    def icmp_error(self, pkt: bytes, code: int, t: int) -> None:
        srcs = self.icmp_sources
        if len(srcs) > 1:
            self.icmp_source = closest_source(srcs, bytes(pkt[8:24]))
        super().icmp_error(pkt, code, t)

    def _rx_verify(self, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool, t: int) -> bool:
        """An unknown client's data packet from the mapping in its address: verify, don't drop
        (module docstring).  A bubble is left to `_rx_new_peer`, which drops it."""
        if is_bub or mapping_of(s6) != src:  # R9a only: the check a spoofer cannot pass blind
            return False
        if not is_global_unicast_ipv4_int(int.from_bytes(s6[4:8], "big")):
            self._drop("rx_unknown_peer")  # no server to send the bubble through
            return True
        if not self.verify_limit.allow(self._last_now):
            self._drop("verify_rate_limited")
            return True
        p = self._create(s6, NO_MAPPING, t)
        if p is not None:
            self.verify_attempts += 1
            self._rx_unverified(p, pkt, s6, src, False, t)
        return True

    def _rx_unverified(self, p: Peer, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool,
                       t: int) -> bool:
        """A packet from a source under verification: the answer to our bubble proves it
        (False: the tunnel trusts the entry at ``src`` and flushes); a data packet waits in
        the queue and may repeat the bubble (miredo's bubble limiter); any other bubble is
        dropped."""
        if is_bub:
            if pkt[24:40] == self.token_source(s6):
                self.verify_proven += 1
                return False
            self._drop("rx_unknown_peer")
            return True
        self._queue(p, pkt, src)
        r = p.may_send_bubble(t)
        if r == SEND:
            self._udp(0, bubble(self.token_source(s6), s6), (server_of(s6), TEREDO_PORT))
        elif r == NEVER:
            self._drop("bubble_limit")
        return True

    def status(self) -> dict[str, Any]:
        prefix16 = self.prefix4 + bytes(12)
        return {
            "role": "relay",
            "relay_type": self.relay_type,
            "state": "running",
            "prefix": f"{ipv6_text(prefix16)}/32",
            "mtu": self.mtu,
            "peers": self.peer_counts(),
            "peer_memory": self.peer_memory(),
            "icmp_errors_sent": self.icmp_sent,
            "icmp_sources": [ipv6_text(a) for a in self.icmp_sources],
            "verify": {"attempts": self.verify_attempts, "proven": self.verify_proven,
                       "rate_limited": self.verify_limit.denied},
            "counters": self.counters.as_dict(),
        }


def closest_source(sources: list[bytes], dst: bytes) -> bytes:
    """The source sharing the longest prefix with ``dst``; the first one on a tie."""
    d = int.from_bytes(dst, "big")
    best, best_len = sources[0], -1
    for a in sources:
        common = 128 - (int.from_bytes(a, "big") ^ d).bit_length()
        if common > best_len:
            best, best_len = a, common
    return best
