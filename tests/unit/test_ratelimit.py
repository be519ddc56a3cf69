"""Token buckets and the bounded per-source table, driven by an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.proto.ratelimit import GlobalLimiter, KeyedLimiter, Rate, TokenBucket


def test_bucket_starts_full_then_refills_at_rate():
    b = TokenBucket(rate=20, burst=50, now=0.0)
    assert sum(b.allow(0.0) for _ in range(60)) == 50
    assert not b.allow(0.0)
    assert sum(b.allow(0.5) for _ in range(20)) == 10  # 0.5 s x 20/s
    assert sum(b.allow(100.0) for _ in range(100)) == 50  # capped at burst


def test_clock_stepping_back_refills_nothing():
    b = TokenBucket(rate=1, burst=1, now=10.0)
    assert b.allow(10.0)
    assert not b.allow(5.0)
    assert not b.allow(10.5)
    assert b.allow(11.0)


def test_keyed_limiter_is_per_source():
    lim = KeyedLimiter(Rate(20, 50))
    a = sum(lim.allow("198.51.100.1", 0.0) for _ in range(100))
    b = sum(lim.allow("198.51.100.2", 0.0) for _ in range(100))
    assert (a, b) == (50, 50)
    assert lim.denied == 100


def test_sustained_rate_matches_configuration():
    lim = KeyedLimiter(Rate(20, 50))
    allowed = 0
    t = 0.0
    for _ in range(10000):  # 1000 packets/s for 10 s
        allowed += lim.allow("k", t)
        t += 0.001
    assert 50 + 20 * 10 - 2 <= allowed <= 50 + 20 * 10 + 1


def test_table_is_bounded_and_counts_unfair_evictions():
    lim = KeyedLimiter(Rate(1, 5), max_keys=100)
    for i in range(1000):
        assert lim.allow(i, 0.0)
    assert len(lim) == 100
    assert lim.evictions == 900  # each evicted bucket had one token taken, so was not full
    lim2 = KeyedLimiter(Rate(1, 5), max_keys=100)
    for i in range(1000):
        lim2.allow(i, float(i * 10))  # every older bucket has refilled by then
    assert len(lim2) == 100 and lim2.evictions == 0


def test_lru_keeps_active_sources():
    lim = KeyedLimiter(Rate(1, 2), max_keys=2)
    lim.allow("a", 0.0)
    lim.allow("a", 0.0)
    assert not lim.allow("a", 0.0)
    lim.allow("b", 0.0)
    assert not lim.allow("a", 0.0)  # touches a: b is now the oldest
    lim.allow("c", 0.0)  # evicts b, not a
    assert not lim.allow("a", 0.0)


def test_expire_forgets_only_refilled_buckets():
    lim = KeyedLimiter(Rate(1, 4))
    lim.allow("old", 0.0)
    lim.allow("new", 3.5)
    assert lim.expire(2.0) == 1  # "old" is full at 1.0, "new" only at 4.5
    assert len(lim) == 1
    assert lim.expire(10.0) == 1 and len(lim) == 0


def test_unlimited_and_invalid_rates():
    assert all(KeyedLimiter(Rate(None)).allow("k", 0.0) for _ in range(10000))
    assert all(GlobalLimiter(Rate(None)).allow(0.0) for _ in range(10000))
    with pytest.raises(ValueError, match="rate must be > 0"):
        Rate(0, 5)
    with pytest.raises(ValueError, match="burst >= 1"):
        Rate(5, 0.5)
    with pytest.raises(ValueError, match="max_keys"):
        KeyedLimiter(Rate(1, 1), max_keys=0)


def test_global_limiter_counts_denials():
    g = GlobalLimiter(Rate(100, 10), now=0.0)
    assert sum(g.allow(0.0) for _ in range(50)) == 10
    assert g.denied == 40


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 0.5)), max_size=300))
def test_never_more_than_burst_plus_rate_times_elapsed(steps):
    lim = KeyedLimiter(Rate(7, 3), max_keys=8)
    now = 0.0
    allowed: dict[int, int] = {}
    for key, dt in steps:
        now += dt
        if lim.allow(key % 4, now):  # 4 keys < max_keys: no eviction, so the bound is exact
            allowed[key % 4] = allowed.get(key % 4, 0) + 1
    for n in allowed.values():
        assert n <= 3 + 7 * now + 1e-9
