"""The ICMPv6 error budget of a client or relay (spec §5.9).

miredo allows 10 Destination Unreachable errors per second for the whole process, counted per
one-second clock tick; an error storm must never amplify a flood of undeliverable packets.
One role runs per engine process, so one limiter per role is "process-wide"; a caller that runs
several roles in one process can pass the same limiter to all of them.
"""

from __future__ import annotations

#: errors per whole-second tick (miredo: ICMP_RATE_LIMIT_MS = 100)
ICMP_ERRORS_PER_SECOND = 10


class IcmpErrorLimiter:
    """At most ``per_second`` errors within one integer second of the monotonic clock."""

    __slots__ = ("_count", "_second", "per_second", "suppressed")

    def __init__(self, per_second: int = ICMP_ERRORS_PER_SECOND) -> None:
        if per_second < 0:
            raise ValueError(f"icmp_limit: per_second must be >= 0, got {per_second}")
        self.per_second = per_second
        self._second = -1
        self._count = 0
        #: errors refused by the budget (for status)
        self.suppressed = 0

    def allow(self, t: int) -> bool:
        """Spend one unit of the budget of second ``t`` if any is left."""
        if t != self._second:
            self._second = t
            self._count = 0
        if self._count >= self.per_second:
            self.suppressed += 1
            return False
        self._count += 1
        return True
