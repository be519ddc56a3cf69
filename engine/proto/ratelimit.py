"""Token buckets: one global, or one per key (source IPv4) in a table of bounded size.

Why: a Teredo server answers unauthenticated UDP from anyone. Without limits it is a
reflector (a spoofed RS gets a ~2x larger RA sent to the victim) and an open relay towards
native IPv6. miredo-server has no rate limiting at all (docs/protocol.md §12.2 #20); we add it.

Memory must stay bounded even when an attacker sprays spoofed source addresses, so the keyed
table is an LRU of at most `max_keys` buckets. Evicting a bucket that has refilled is lossless
(a new bucket starts full, exactly like the refilled one). Evicting a partly drained bucket
gives that source a fresh burst; that is the price of bounded memory, it is counted in
`evictions`, and a global bucket behind the per-source one still caps the total.

Time is an argument (`now`, monotonic seconds) like everywhere in `engine.proto`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from .records import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`rate` tokens per second, at most `burst` saved up. `rate=None` means unlimited."""

    rate: float | None
    burst: float = 1.0

    def __post_init__(self) -> None:
        if self.rate is not None and (self.rate <= 0 or self.burst < 1):
            raise ValueError(
                f"rate limit {self.rate}/s burst {self.burst}: rate must be > 0 and burst >= 1 "
                "(use rate=None to disable)"
            )

    @property
    def unlimited(self) -> bool:
        return self.rate is None


class TokenBucket:
    """One bucket; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if available. A clock that steps back refills nothing."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def full_at(self) -> float:
        """When this bucket will be full again (after which forgetting it changes nothing)."""
        return self.stamp + (self.burst - self.tokens) / self.rate


class GlobalLimiter:
    """A single bucket for a total (e.g. every packet sent to native IPv6)."""

    def __init__(self, limit: Rate, now: float = 0.0) -> None:
        self.limit = limit
        self.denied = 0
        self._bucket = None if limit.rate is None else TokenBucket(limit.rate, limit.burst, now)

    def allow(self, now: float, cost: float = 1.0) -> bool:
        if self._bucket is None or self._bucket.allow(now, cost):
            return True
        self.denied += 1
        return False


class KeyedLimiter:
    """One bucket per key (a source IPv4), at most `max_keys` of them (LRU)."""

    def __init__(self, limit: Rate, max_keys: int = 65536) -> None:
        if max_keys < 1:
            raise ValueError(f"rate limiter max_keys {max_keys}: need at least 1")
        self.limit = limit
        self.max_keys = max_keys
        self.denied = 0
        self.evictions = 0  # buckets forgotten before they had refilled
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        rate = self.limit.rate
        if rate is None:
            return True
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self.max_keys:
                self._make_room(now)
            b = buckets[key] = TokenBucket(rate, self.limit.burst, now)
        else:
            buckets.move_to_end(key)
        if b.allow(now, cost):
            return True
        self.denied += 1
        return False

    def _make_room(self, now: float) -> None:
        _, oldest = self._buckets.popitem(last=False)
        if oldest.full_at() > now:
            self.evictions += 1

    def expire(self, now: float, max_scan: int = 64) -> int:
        """Forget up to `max_scan` least-recently-used buckets that have refilled (lossless).

        Bounded work per call so that a periodic timer can keep the table small without a
        pause proportional to its size.
        """
        removed = 0
        buckets = self._buckets
        while buckets and removed < max_scan:
            key, b = next(iter(buckets.items()))
            if b.full_at() > now:
                break
            del buckets[key]
            removed += 1
        return removed

    def stats(self) -> dict[str, object]:
        return {
            "rate": self.limit.rate,
            "burst": self.limit.burst,
            "keys": len(self._buckets),
            "max_keys": self.max_keys,
            "denied": self.denied,
            "evictions": self.evictions,
        }
