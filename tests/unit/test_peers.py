"""Peer table: capacity, FIFO queue with the 1280-byte budget, miredo's integer-second rate
limiters, validity and the incremental two-generation GC (spec §5.1–§5.4)."""

from __future__ import annotations

import pytest

from engine.proto.addr import build_teredo, mapping_of
from engine.proto.peers import (
    LATER,
    MAXQUEUE,
    NEVER,
    NO_MAPPING,
    SEND,
    Peer,
    PeerTable,
)

M = ("198.51.100.7", 40000)


def key(i: int) -> bytes:
    return b"\x20\x01\x00\x00" + i.to_bytes(12, "big")


# --- capacity ------------------------------------------------------------------------------

def test_full_table_refuses_creation_and_counts():
    t = PeerTable(capacity=3)
    for i in range(3):
        assert t.create(key(i), M, 10) is not None
    assert t.create(key(99), M, 10) is None
    assert t.dropped_full == 1 and t.get(key(99)) is None
    # existing entries are still found while full
    assert t.get(key(1)) is not None
    assert len(t) == 3


def test_capacity_counts_both_generations():
    t = PeerTable(capacity=2, generation=30)
    t.gc_step(0.0)
    t.create(key(0), M, 0)
    t.gc_step(30.0)  # key(0) now in the old generation
    t.create(key(1), M, 30)
    assert len(t) == 2
    assert t.create(key(2), M, 30) is None


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        PeerTable(capacity=0)


# --- queue ---------------------------------------------------------------------------------

def test_queue_is_fifo_and_budget_is_1280_bytes_total():
    p = Peer(key(0), M, 0)
    assert p.enqueue(b"a" * 600, None)
    assert p.enqueue(b"b" * 600, ("203.0.113.5", 3545))
    # 80 bytes left: an 81-byte packet is refused whole, an 80-byte one fits exactly
    assert not p.enqueue(b"c" * 81, None)
    assert p.enqueue(b"d" * 80, None)
    assert p.queue_left == 0
    assert not p.enqueue(b"e", None)
    q = p.take_queue(5)
    assert [pkt[:1] for pkt, _ in q] == [b"a", b"b", b"d"]
    assert q[1][1] == ("203.0.113.5", 3545)
    assert p.queue_left == MAXQUEUE and p.queue is None


def test_oversized_packet_never_queued():
    p = Peer(key(0), M, 0)
    assert not p.enqueue(b"x" * (MAXQUEUE + 1), None)
    assert p.queue is None


def test_take_queue_is_predecap():
    p = Peer(key(0), M, 0)
    p.bubbles = 3
    p.pings = 2
    assert p.take_queue(17) is None
    assert (p.bubbles, p.pings, p.last_rx) == (0, 0, 17)


# --- rate limiters (§5.4, integer seconds) ----------------------------------------------------

def test_bubble_limiter_exact_cadence():
    p = Peer(key(0), M, 0)
    assert p.may_send_bubble(100) == SEND  # first: always
    assert p.may_send_bubble(101) == LATER
    assert p.may_send_bubble(102) == LATER  # now - last_tx == 2 -> still LATER
    assert p.may_send_bubble(103) == SEND   # > 2 s
    assert p.may_send_bubble(106) == SEND
    assert p.may_send_bubble(109) == SEND
    assert p.bubbles == 4
    assert p.may_send_bubble(112) == NEVER
    assert p.may_send_bubble(109 + 300) == NEVER  # == 300 -> still blocked
    assert p.may_send_bubble(109 + 301) == SEND  # > 300: counter reset, this is bubble 1
    assert p.bubbles == 1 and p.last_tx == 410


def test_data_transmission_delays_next_bubble():
    """last_tx is shared with data packets (TouchTransmit), as in miredo."""
    p = Peer(key(0), M, 0)
    assert p.may_send_bubble(10) == SEND
    p.last_tx = 20
    assert p.may_send_bubble(21) == LATER
    assert p.may_send_bubble(23) == SEND


def test_ping_limiter_never_resets_by_time():
    p = Peer(key(0), M, 0)
    assert p.may_send_ping(50) == SEND
    assert p.may_send_ping(52) == LATER
    assert p.may_send_ping(53) == SEND
    assert p.may_send_ping(56) == SEND
    assert p.may_send_ping(59) == SEND
    assert p.may_send_ping(62) == NEVER
    assert p.may_send_ping(100_000) == NEVER
    p.take_queue(100_001)  # a reception clears it
    assert p.may_send_ping(100_001) == SEND


def test_validity_30_and_600_seconds():
    p = Peer(key(0), M, 1000)
    assert p.valid(1030) and not p.valid(1031)
    p.local = True
    assert p.valid(1600) and not p.valid(1601)


# --- tick -------------------------------------------------------------------------------------

def test_tick_shares_one_int_per_second():
    t = PeerTable()
    a = t.tick(12345.1)
    b = t.tick(12345.9)
    assert a == 12345 and a is b
    assert t.tick(12346.0) == 12346
    assert t.tick(12345.5) == 12345  # clocks may be fed out of order in tests


# --- two-generation GC --------------------------------------------------------------------------

def test_idle_entry_lives_between_e_and_2e():
    t = PeerTable(generation=30)
    t.gc_step(0.0)  # arms the first swap at 30
    t.create(key(1), M, 0)
    t.gc_step(29.9)
    assert t.get(key(1)) is not None  # still recent
    t.gc_step(30.0)  # recent -> old
    assert key(1) in t.old
    t.gc_step(59.0)
    assert len(t) == 1
    t.gc_step(60.0)  # old generation released
    assert len(t) == 0 and t.get(key(1)) is None


def test_lookup_moves_entry_back_to_recent():
    t = PeerTable(generation=30)
    t.gc_step(0.0)
    t.create(key(1), M, 0)
    t.gc_step(30.0)
    assert key(1) in t.old
    assert t.get(key(1)) is not None
    assert key(1) in t.recent and key(1) not in t.old
    t.gc_step(60.0)
    assert t.get(key(1)) is not None  # survived: it was touched at 30


def test_gc_frees_in_bounded_slices():
    t = PeerTable(generation=30, gc_slice=100)
    t.gc_step(0.0)
    for i in range(1050):
        t.create(key(i), M, 0)
    t.gc_step(30.0)
    assert t.gc_step(31.0) == 0  # nothing dying yet
    t.gc_step(60.0)  # the 1050 entries are released ...
    assert len(t) == 0
    assert t.next_gc() == 0.0  # ... and gc wants to run again at once
    freed = [t.gc_step(60.0 + i / 100) for i in range(11)]
    assert all(f <= 100 for f in freed)
    assert sum(freed) == 1050 - 100  # the swap call itself already freed one slice
    assert not t.dying and t.next_gc() == 90.0  # back to the swap schedule


def test_clear_releases_incrementally():
    t = PeerTable(gc_slice=10)
    for i in range(25):
        t.create(key(i), M, 0)
    t.clear()
    assert len(t) == 0 and t.get(key(3)) is None
    assert t.gc_step(0.0) == 10
    assert t.gc_step(0.0) == 10
    assert t.gc_step(0.0) == 5
    assert t.next_gc() is not None


def test_counts_reports_trusted():
    t = PeerTable()
    for i in range(5):
        p = t.create(key(i), M, 0)
        p.trusted = i % 2 == 0
    assert t.counts() == {"count": 5, "trusted": 3}


# --- the mapping: derived from the key unless the peer stores its own -----------------------

TEREDO = build_teredo(0x20010000, "203.0.113.10", 0, 40000, "198.18.0.115")


def test_a_mapping_the_key_carries_is_derived_not_stored():
    p = Peer(TEREDO, ("198.18.0.115", 40000), 0)
    assert p._mapping is None and not p.stores_mapping
    assert p.mapping == ("198.18.0.115", 40000)
    assert p.mapping is not p.mapping  # built on demand, never cached on the peer
    q = Peer(TEREDO, None, 0)
    assert q._mapping is None and q.mapping == p.mapping


def test_another_mapping_is_stored_as_given():
    m = ("203.0.113.9", 40000)  # same port, other address
    p = Peer(TEREDO, m, 0)
    assert p._mapping is m and p.stores_mapping and p.mapping is m
    p.mapping = ("198.18.0.115", 40001)  # same address, other port
    assert p.stores_mapping and p.mapping == ("198.18.0.115", 40001)


def test_the_setter_normalises_back_to_the_derived_mapping():
    p = Peer(TEREDO, ("203.0.113.9", 3545), 0)
    p.mapping = ("198.18.0.115", 40000)  # a fresh tuple equal to the derived one
    assert p._mapping is None and p.mapping == ("198.18.0.115", 40000)


def test_no_mapping_is_kept_as_the_shared_constant():
    p = Peer(TEREDO, ("0.0.0.0", 0), 0)  # an equal tuple, not the constant itself
    assert p._mapping is NO_MAPPING and not p.stores_mapping
    assert p.mapping == NO_MAPPING
    assert p.describe(TEREDO, 0)["mapping"] is None
    p.mapping = ("198.18.0.115", 40000)
    assert p.describe(TEREDO, 0)["mapping"] == {"ip": "198.18.0.115", "port": 40000}


@pytest.mark.parametrize("k", [bytes(16), b"\xff" * 16, bytes(range(16)),
                               bytes.fromhex("20010db8000000000000000000000001")])
def test_derivation_holds_for_any_key(k: bytes):
    """A client's peers may be native hosts (NO_MAPPING, or the relay they come through):
    what is read back is always what was written, whatever the key."""
    for m in (NO_MAPPING, ("192.0.2.1", 3544), mapping_of(k)):
        p = Peer(k, m, 0)
        assert p.mapping == m
        assert (p._mapping is None) == (m == mapping_of(k))
