"""The Teredo relay role (spec §6): forwards between native IPv6 (the TUN device) and Teredo
clients (UDP), with no qualification and no Teredo address of its own.

A relay learns a client only by sending to it (T8): the first packet towards a client is queued
and an indirect bubble goes through the client's server (plus a direct one for the deprecated
``restricted`` type); the client's answer bubble makes it trusted and flushes the queue.
Packets from Teredo sources the relay never sent to, or from a mapping that does not match,
are dropped; non-Teredo sources are dropped.  The hop limit is left to the kernel.

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

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .addr import LL_CLIENT, TEREDO_PREFIX, ipv6_text
from .icmp_limit import IcmpErrorLimiter
from .peers import DEFAULT_CAPACITY, RELAY_GENERATION, RELAY_MEMORY_LIMIT
from .tunnel import TeredoTunnel

if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from engine.config.model import EngineConfig

CONE_OF_RELAY_TYPE = {"relay": True, "cone": True, "restricted": False}
"""The RelayType words that make a relay, and whether each is a cone relay (indirect bubbles
only) or a restricted one (direct + indirect, deprecated); the config's list of every
RelayType word is `engine.config.directives.RELAY_TYPE_WORDS`."""


class RelayRole(TeredoTunnel):
    """``relay_type`` is the config word (``relay``, ``cone`` or ``restricted``)."""

    def __init__(
        self,
        *,
        relay_type: str = "cone",
        prefix: int = TEREDO_PREFIX,
        mtu: int = 1280,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
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
