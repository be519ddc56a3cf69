"""`python -m bench.peers_rss N`: resident memory of our peer table holding N peers.

Run in a fresh interpreter so that only the engine module and the table are counted. Each
peer is what a relay keeps for a real client: a distinct 16-byte Teredo address as the key,
trusted at the mapping its address carries (R9a, docs/protocol.md: a relay trusts a Teredo
peer only at that mapping), that mapping handed over as a fresh ``(ip, port)`` tuple with its
own address string and port int, as `recvfrom` allocates it, and assigned the way the relay's
receive path does (``PeerTable.remap``). Prints one JSON object.

Why the mapping matches the address: until issue 15's lean peer table this script gave every
peer an IPv4 unrelated to its address, which costs the same as the real case while the table
stores every mapping tuple; now the table keeps no tuple for a mapping its key already holds,
so an unrelated mapping would measure a case a relay does not have (it stays measured by
``tests/unit/test_peer_budget.py``, whose estimates cover both).
"""

from __future__ import annotations

import gc
import json
import struct
import sys
import time
from pathlib import Path


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status: no VmRSS line")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m bench.peers_rss N", file=sys.stderr)
        return 2
    n = int(argv[0])
    from engine.proto.peers import NO_MAPPING, PeerTable

    gc.collect()
    before = rss_kib()
    table = PeerTable(capacity=max(n, 1))
    remap = getattr(table, "remap", None)  # absent before the lean table: plain assignment
    t0 = time.monotonic()
    now = 1000.0
    tick = table.tick(now)
    server = bytes([203, 0, 113, 10])
    for i in range(n):
        # 2001:0:<server>:<flags>:<~port>:<~ipv4>, all distinct
        port, host = 1024 + i % 60000, (198 << 24) | (18 << 16) | (i & 0x1FFFF)
        key = (b"\x20\x01\x00\x00" + server + struct.pack("!HHI", i >> 17, port ^ 0xFFFF,
                                                           host ^ 0xFFFFFFFF))
        # the relay creates an unverified entry, then trusts the source that proved it
        peer = table.create(key, NO_MAPPING, tick)
        if peer is None:
            raise RuntimeError(f"peer table full after {i} peers")
        src = (f"198.{18 + ((i >> 16) & 1)}.{(i >> 8) & 0xFF}.{i & 0xFF}", port)
        if remap is not None:
            remap(peer, src)
        else:
            peer.mapping = src
        peer.trusted = True
        del src
    build_s = time.monotonic() - t0
    gc.collect()
    after = rss_kib()
    if len(table) != n:
        raise RuntimeError(f"table holds {len(table)} peers, expected {n}")
    print(json.dumps({"peers": n, "before_kib": before, "after_kib": after,
                      "bytes_per_peer": (after - before) * 1024 / n if n else 0.0,
                      "build_s": build_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
