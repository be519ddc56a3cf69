"""Packet/byte counters shared by every role.

Plain int attributes in `__slots__` because they are bumped on the hot path of a relay
forwarding many thousands of packets per second; `as_dict()` is the JSON shape the status
socket reports (docs/contracts.md §4).
"""

from __future__ import annotations

from collections import Counter

COUNTER_NAMES: tuple[str, ...] = (
    "udp_in_packets",
    "udp_in_bytes",
    "udp_out_packets",
    "udp_out_bytes",
    "tun_in_packets",
    "tun_in_bytes",
    "tun_out_packets",
    "tun_out_bytes",
    "raw6_out_packets",
    "raw6_out_bytes",
)


class Counters:
    """Per-path packet and byte totals, plus drops keyed by a short snake_case reason."""

    __slots__ = (*COUNTER_NAMES, "drops")

    def __init__(self) -> None:
        self.udp_in_packets = 0
        self.udp_in_bytes = 0
        self.udp_out_packets = 0
        self.udp_out_bytes = 0
        self.tun_in_packets = 0
        self.tun_in_bytes = 0
        self.tun_out_packets = 0
        self.tun_out_bytes = 0
        self.raw6_out_packets = 0
        self.raw6_out_bytes = 0
        self.drops: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        """Count one dropped packet under `reason` (documented where it is counted)."""
        self.drops[reason] += 1

    def as_dict(self) -> dict[str, object]:
        """JSON-ready snapshot; `drops` is copied so the caller may keep it."""
        out: dict[str, object] = {name: getattr(self, name) for name in COUNTER_NAMES}
        out["drops"] = dict(self.drops)
        return out

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()!r})"
