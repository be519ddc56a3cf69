"""`python -m bench.peers_rss N`: resident memory of our peer table holding N peers.

Run in a fresh interpreter so that only the engine module and the table are counted. Each
peer is what a relay keeps for a real client: a distinct 16-byte Teredo address as the key,
and its own (ip, port) mapping tuple with its own address string, as `recvfrom` would have
allocated it. Prints one JSON object.
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
    from engine.proto.peers import PeerTable

    gc.collect()
    before = rss_kib()
    table = PeerTable(capacity=max(n, 1))
    t0 = time.monotonic()
    now = 1000.0
    tick = table.tick(now)
    server = bytes([203, 0, 113, 10])
    for i in range(n):
        # 2001:0:<server>:<flags>:<~port>:<~ipv4>, all distinct
        port, host = 1024 + i % 60000, (198 << 24) | (18 << 16) | (i & 0xFFFF)
        key = (b"\x20\x01\x00\x00" + server + struct.pack("!HHI", i >> 16, port ^ 0xFFFF,
                                                           host ^ 0xFFFFFFFF))
        ip = f"198.{18 + ((i >> 16) & 1)}.{(i >> 8) & 0xFF}.{i & 0xFF}"
        peer = table.create(key, (ip, port), tick)
        if peer is None:
            raise RuntimeError(f"peer table full after {i} peers")
        peer.trusted = True
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
