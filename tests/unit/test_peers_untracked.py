"""Peers out of the cyclic collector's sight (engine.proto.peers.Peer's docstring).

Untracking is only safe for an object that can never be part of a reference cycle: the first
test walks what a peer refers to after everything the table does to one (a stored mapping, a
remap, queued packets from a source and from the TUN), so that a new slot holding something
that could refer back fails here before it could leak.  The others check that the compiled
module's `untrack` is what `PeerTable.create` uses, and that untracked peers still go when
their table lets go of them."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from engine.proto import peers
from engine.proto.peers import Peer, PeerTable
from engine.runtime import fastpath

ATOMIC = (bytes, str, int, float, bool, type(None))


def _key(n: int) -> bytes:
    return b"\x20\x01\x00\x00" + n.to_bytes(12, "big")


def _walk(obj: object, depth: int = 0) -> list[str]:
    """What under `obj` is neither atomic nor a tuple/list of such, as text (empty: fine)."""
    bad = []
    for ref in gc.get_referents(obj):
        if isinstance(ref, ATOMIC):
            continue
        if isinstance(ref, (tuple, list)) and depth < 3:
            bad += _walk(ref, depth + 1)
            continue
        if isinstance(ref, type) and depth == 0:  # a slotted instance refers to its class
            continue
        bad.append(f"{type(ref).__name__} at depth {depth}")
    return bad


def test_a_peer_refers_to_nothing_that_can_refer_back():
    table = PeerTable()
    derived = table.create(_key(1), None, 10)
    stored = table.create(_key(2), ("192.0.2.7", 40000), 10)
    assert derived is not None and stored is not None
    assert table.remap(derived, ("198.51.100.9", 3544))
    assert table.enqueue(stored, b"\x60" + bytes(47), ("192.0.2.7", 40000)) is None
    assert table.enqueue(stored, b"\x60" + bytes(39), None) is None
    derived.trusted = True
    derived.last_ping = 11.5
    for p in (derived, stored):
        assert _walk(p) == [], p.describe(p.key, 12)


@pytest.mark.skipif(not fastpath.available(), reason="compiled module not built")
def test_the_table_untracks_each_new_peer_with_the_compiled_module():
    """`fastpath` hands the compiled `untrack` to the peer table when the compiled data path
    is wanted (not with TEREDO_FASTPATH=0, the pure-Python reference)."""
    before = peers._untrack
    try:
        peers.set_untrack(fastpath._fastloop.untrack)
        table = PeerTable()
        p = table.create(_key(3), None, 0)
        assert p is not None and not gc.is_tracked(p)
        assert table.enqueue(p, b"\x60" + bytes(39), None) is None
        assert p.queue is not None and not gc.is_tracked(p.queue)
        assert gc.is_tracked(Peer(_key(4), None, 0))  # made outside the table: untouched
        peers.set_untrack(None)
        assert gc.is_tracked(table.create(_key(5), None, 0))
    finally:
        peers.set_untrack(before)
    if fastpath.wanted():
        assert peers._untrack is fastpath._fastloop.untrack


@pytest.mark.skipif(not fastpath.available(), reason="compiled module not built")
def test_untracked_peers_are_freed_with_their_table():
    """Reference counting frees an untracked peer as soon as nothing holds it: a table of
    20,000 untracked peers dropped gives its memory back without any collection."""
    before = peers._untrack
    gc.disable()
    tracemalloc.start()
    try:
        peers.set_untrack(fastpath._fastloop.untrack)
        start = tracemalloc.get_traced_memory()[0]
        table = PeerTable()
        for n in range(20000):
            p = table.create(_key(n), ("192.0.2.1", 1024 + n % 60000), 0)
            assert p is not None and table.enqueue(p, b"\x60" + bytes(99), None) is None
        grown = tracemalloc.get_traced_memory()[0] - start
        del table
        left = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
        gc.enable()
        peers.set_untrack(before)
    assert grown > 20000 * 100
    assert left < grown // 20
