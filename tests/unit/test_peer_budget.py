"""The peer table's byte budget (issue 9, flaw 2): estimates that are upper bounds of what
tracemalloc measures, the eviction policy, and the lifetime of never-confirmed entries."""

from __future__ import annotations

import tracemalloc

import pytest

from engine.proto.addr import build_teredo
from engine.proto.peers import (
    CLIENT_MEMORY_LIMIT,
    ENTRY_COST,
    MAPPING_COST,
    MIN_MEMORY_LIMIT,
    NO_MAPPING,
    RECORD_COST,
    RELAY_MEMORY_LIMIT,
    Peer,
    PeerTable,
    peer_cost,
)


def mapping(i: int) -> tuple[str, int]:
    """A fresh address string and port per peer, as `recvfrom` makes them: the mapping peer
    ``i``'s address carries (R9a: the only one a relay trusts a Teredo peer at)."""
    return (f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}", 1024 + i % 60000)


def other(i: int) -> tuple[str, int]:
    """A fresh endpoint unrelated to peer ``i``'s address (a client's native peer behind a
    relay, a local peer): the entry must store it."""
    return (f"203.0.{i >> 8 & 255}.{i & 255}", 2000 + i % 60000)


def key(i: int) -> bytes:
    ip, port = mapping(i)
    return build_teredo(0x20010000, "203.0.113.10", i >> 17, port, ip)


def _traced(build) -> tuple[PeerTable, int]:
    table = PeerTable(capacity=1 << 20, generation=30)
    table.gc_step(0.0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        build(table)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return table, used


@pytest.mark.parametrize("n", [1000, 12_000])
@pytest.mark.parametrize(
    "shape",
    ["pending", "trusted", "trusted_other", "pending_no_mapping", "remapped_other",
     "queued_out_100", "queued_out_1280", "queued_in_3x400"],
)
def test_accounted_bytes_are_an_upper_bound_of_tracemalloc(shape: str, n: int):
    def build(table: PeerTable) -> None:
        t = table.tick(5.0)
        pkt = bytearray(1280)
        for i in range(n):
            k = bytes(key(i))
            m = {"trusted_other": other(i), "pending_no_mapping": NO_MAPPING}.get(shape,
                                                                              mapping(i))
            p = table.create(k, m, t, pending=not shape.startswith("trusted"))
            assert p is not None
            if shape == "remapped_other":  # verified at an endpoint of its own (R9 b-e)
                assert table.remap(p, other(i))
            elif shape.startswith("queued_out"):
                size = int(shape.rsplit("_", 1)[1])
                pkt[24:40] = k
                assert table.enqueue(p, bytes(pkt[:size]), None) is None
            elif shape == "queued_in_3x400":
                for j in range(3):
                    pkt[8:24] = k
                    src = mapping(i + j + 1)  # a fresh recvfrom tuple per datagram
                    assert table.enqueue(p, bytes(pkt[:400]), src) is None

    table, traced = _traced(build)
    print(f"\n{shape} x{n}: traced {traced / n:.0f} B/peer, accounted {table.used / n:.0f}")
    assert traced <= table.used
    # and not wildly above: the estimate is a budget, not a guess
    assert table.used <= traced * 1.35 + 64 * n


def test_only_a_mapping_the_key_does_not_carry_is_stored_and_charged():
    t = PeerTable(capacity=16)
    own = t.create(key(1), mapping(1), 0, pending=False)
    none = t.create(key(2), None, 0, pending=False)
    native = t.create(key(3), NO_MAPPING, 0, pending=False)
    assert t.used == 3 * ENTRY_COST
    assert not (own.stores_mapping or none.stores_mapping or native.stores_mapping)
    assert native._mapping is NO_MAPPING
    stored = t.create(key(4), other(4), 0, pending=False)
    assert stored.stores_mapping and t.used == 4 * ENTRY_COST + MAPPING_COST
    assert sum(peer_cost(p) for p in t.recent.values()) == t.used


def test_remap_charges_a_stored_mapping_and_gives_it_back():
    t = _small(limit=1 << 20)
    p = t.create(key(5), NO_MAPPING, 0)
    base = t.used
    assert t.remap(p, mapping(5)) and t.used == base and p._mapping is None
    assert t.remap(p, other(5)) and t.used == base + MAPPING_COST
    assert t.remap(p, other(6)) and t.used == base + MAPPING_COST  # still one stored
    assert t.remap(p, mapping(5)) and t.used == base and p.mapping == mapping(5)


def test_remap_refused_when_the_budget_is_full_of_trusted_peers():
    t = _small()
    i = 0
    while (p := t.create(key(i), mapping(i), 0, pending=False)) is not None:
        p.trusted = True
        i += 1
    p = t.get(key(0))
    used = t.used
    assert t.memory_limit - used < MAPPING_COST  # what is left cannot hold a stored mapping
    assert not t.remap(p, other(0))
    assert t.full_reason == "peer_budget_full" and t.refused_budget >= 1
    assert p._mapping is None and p.mapping == mapping(0) and t.used == used
    assert t.remap(p, mapping(0))  # storing nothing needs no room


def test_a_queue_is_a_list_created_on_the_first_packet():
    p = Peer(key(0), ("198.51.100.1", 40000), 0)
    assert p.queue is None
    assert p.enqueue(b"x" * 100, None)
    assert type(p.queue) is list


def test_defaults_client_far_below_relay():
    assert CLIENT_MEMORY_LIMIT * 16 <= RELAY_MEMORY_LIMIT


def _small(limit: int = MIN_MEMORY_LIMIT, **kw) -> PeerTable:
    t = PeerTable(memory_limit=limit, generation=30, **kw)
    t.gc_step(0.0)
    return t


def _fill_pending(t: PeerTable, start: int, count: int, now: int = 0) -> None:
    for i in range(start, start + count):
        assert t.create(key(i), mapping(i), now) is not None


def test_accounting_never_exceeds_the_budget_and_evicts_oldest_pending_first():
    t = _small()
    per = ENTRY_COST + RECORD_COST
    fits = MIN_MEMORY_LIMIT // per
    _fill_pending(t, 0, fits)
    assert t.used <= t.memory_limit and t.evicted == 0
    _fill_pending(t, fits, 10)
    assert t.used <= t.memory_limit
    assert t.evicted == 10
    assert all(t.get(key(i)) is None for i in range(10))  # the oldest went
    assert all(t.get(key(i)) is not None for i in range(10, fits + 10))


def test_trusted_peers_are_never_evicted_for_pending_ones():
    t = _small()
    trusted = []
    i = 0
    while True:  # fill the budget with verified peers
        p = t.create(key(i), mapping(i), 0, pending=False)
        if p is None:
            break
        p.trusted = True
        trusted.append(i)
        i += 1
    assert t.full_reason == "peer_budget_full"
    for j in range(i, i + 100):
        assert t.create(key(j), mapping(j), 0) is None
    assert t.refused_budget == 101 and t.evicted == 0
    assert all(t.get(key(k)).trusted for k in trusted)


def test_a_peer_verified_after_creation_is_no_longer_evictable():
    t = _small()
    p0 = t.create(key(0), mapping(0), 0)
    p0.trusted = True  # the bubble came back (R9) or a ping test answered (R8)
    _fill_pending(t, 1, 400)
    assert t.get(key(0)) is p0
    assert t.used <= t.memory_limit


def test_queueing_evicts_older_pending_entries_but_never_its_own_peer():
    t = _small()
    per = ENTRY_COST + RECORD_COST
    _fill_pending(t, 0, MIN_MEMORY_LIMIT // per)
    newest = t.get(key(MIN_MEMORY_LIMIT // per - 1))
    assert t.enqueue(newest, b"x" * 1000, None) is None
    assert t.evicted >= 1 and t.get(key(0)) is None
    assert t.used <= t.memory_limit
    # the oldest pending entry itself may not evict others for its queue
    oldest = t.get(key(t.evicted))
    assert oldest is not None
    while t.used + 1200 <= t.memory_limit:
        _fill_pending(t, 10_000 + t.evicted, 1)
    assert t.enqueue(oldest, b"x" * 1000, None) in (None, "peer_budget_full")
    assert t.used <= t.memory_limit


def test_dying_generations_stay_charged_and_are_freed_first():
    t = _small(gc_slice=1)
    per = ENTRY_COST + RECORD_COST
    fits = MIN_MEMORY_LIMIT // per
    _fill_pending(t, 0, fits)
    t.gc_step(30.0)
    t.gc_step(60.0)  # everything is dying now; one entry freed per step
    assert len(t) == 0 and t.dying
    assert t.used > t.memory_limit - 3 * per  # released, not yet freed: still charged
    _fill_pending(t, fits, 5, now=60)  # frees dying entries instead of refusing
    assert t.used <= t.memory_limit and t.refused_budget == 0


def test_everything_released_brings_the_accounting_back_to_zero():
    t = _small(limit=1 << 20)
    for i in range(300):
        p = t.create(key(i), mapping(i), 0, pending=i % 3 != 0)
        if i % 2:
            t.enqueue(p, b"y" * 200, mapping(i + 1) if i % 4 == 1 else None)
        if i % 5 == 0:
            p.trusted = True
        if i % 7 == 3:  # some verified at an endpoint of their own, some of them back again
            assert t.remap(p, other(i))
            if i % 2:
                assert t.remap(p, mapping(i))
    assert t.used == sum(peer_cost(p) for d in (t.recent, t.old) for p in d.values()) + (
        RECORD_COST * (len(t.pending) // 3)
    )
    for i in range(0, 300, 7):  # some flush their queue
        p = t.get(key(i))
        t.take_queue(p, 1)
    for now in (30.0, 60.0, 90.0, 120.0):
        t.gc_step(now)
    while t.dying or t.pending:
        t.gc_step(120.0)
    assert len(t) == 0 and t.used == 0


def test_clear_releases_the_fifo_and_charges_the_dying_dicts():
    t = _small(limit=1 << 20)
    _fill_pending(t, 0, 50)
    before = t.used
    t.clear()
    assert not t.pending and t.used == before - 50 * RECORD_COST
    while t.dying:
        t.gc_step(1.0)
    assert t.used == 0


# --- the lifetime of never-confirmed entries -----------------------------------------------

def test_pending_entries_expire_after_the_pending_lifetime():
    """The client's entries live 600-1200 s; a never-confirmed one goes after 60 s."""
    t = PeerTable(memory_limit=1 << 20, generation=600, pending_lifetime=60)
    t.gc_step(0.0)
    _fill_pending(t, 0, 10, now=0)
    verified = t.create(key(100), mapping(100), 0)
    verified.trusted = True
    local = t.create(key(101), mapping(101), 0)
    local.local = True  # a discovery peer: its announcements come every 200-299 s
    _fill_pending(t, 200, 5, now=40)
    assert t.next_gc() == 60.0  # the oldest pending entry's end comes before the swap
    t.gc_step(59.0)
    assert t.expired_pending == 0
    t.gc_step(60.0)
    assert t.expired_pending == 10
    assert all(t.get(key(i)) is None for i in range(10))
    assert t.get(key(100)) is verified and t.get(key(101)) is local
    assert all(t.get(key(i)) is not None for i in range(200, 205))
    assert t.next_gc() == 100.0
    t.gc_step(100.0)
    assert t.expired_pending == 15 and len(t) == 2
    assert t.used == 2 * ENTRY_COST


def test_without_a_pending_lifetime_entries_follow_the_generations():
    t = _small(limit=1 << 20)
    _fill_pending(t, 0, 10, now=0)
    t.gc_step(29.0)
    assert len(t) == 10 and t.expired_pending == 0
