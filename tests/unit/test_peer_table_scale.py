"""A busy relay's peer table: memory per peer and bounded GC work at scale.

The default run builds 200 000 entries and extrapolates to a million; the ``slow`` variant
builds the full 1 048 576 (default capacity).  Entries are built the way the relay creates them
(T8): a fresh 16-byte key sliced from a packet and a fresh ``(ip, port)`` mapping tuple, so the
measurement includes everything a real entry costs.
"""

from __future__ import annotations

import tracemalloc

import pytest

from engine.proto.peers import PeerTable

#: Upper bound per entry (bytes), the "few hundred MB per million" requirement with headroom.
MAX_BYTES_PER_PEER = 450


def _build(n: int) -> tuple[PeerTable, float]:
    table = PeerTable(capacity=max(n, 1), generation=30, gc_slice=4096)
    table.gc_step(0.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t = table.tick(5.0)
    pkt = bytearray(40)
    pkt[0:4] = b"\x20\x01\x00\x00"
    for i in range(n):
        pkt[24:40] = b"\x20\x01\x00\x00\xcb\x00\x71\x0a" + i.to_bytes(8, "big")
        dst = bytes(pkt[24:40])
        ip = f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}"
        table.create(dst, (ip, 1024 + (i & 0xFFFF) % 60000), t)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return table, used / n


def _assert_scale(n: int) -> None:
    table, per_peer = _build(n)
    assert len(table) == n
    print(f"\npeer table: {n} entries, {per_peer:.0f} B/peer = {per_peer * 1e6 / 2**20:.0f} MiB "
          f"per million")
    assert per_peer < MAX_BYTES_PER_PEER
    # GC: after two generation swaps the whole table is dying; every step frees at most a slice
    table.gc_step(30.0)
    table.gc_step(60.0)
    assert len(table) == 0
    steps = 1
    while table.dying:
        assert table.gc_step(60.0) <= table.gc_slice
        steps += 1
    assert steps >= n // table.gc_slice


def test_peer_table_200k_memory_and_bounded_gc():
    _assert_scale(200_000)


@pytest.mark.slow
def test_peer_table_one_million():
    _assert_scale(1 << 20)
