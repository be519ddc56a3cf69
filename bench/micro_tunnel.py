"""Micro-benchmark of the relay's trusted fast path, both directions (not a test).

    .venv/bin/python bench/micro_tunnel.py [packets]

Builds a relay with N trusted peers, then times ``receive_tun_packet`` (native -> Teredo) and
``receive_datagram`` (Teredo -> native) for 1280-byte packets spread over the peers, draining
the output lists the way the runtime does after each batch.  Prints packets/s and the Mbit/s
that corresponds to at 1280 bytes per packet.
"""

from __future__ import annotations

import sys
import time

from engine.proto.addr import build_teredo
from engine.proto.relay import RelayRole
from engine.proto.wire import build_ipv6

NATIVE = bytes.fromhex("20010db8000100000000000000000001")
PEERS = 1000
BATCH = 64


def setup(n_peers: int) -> tuple[RelayRole, list[bytes], list[tuple[bytes, tuple[str, int]]]]:
    r = RelayRole(relay_type="cone", token_bytes=lambda n: bytes(range(n)))
    now = 100.0
    to_clients = []
    from_clients = []
    for i in range(n_peers):
        mapping = (f"198.51.{100 + i // 250}.{1 + i % 250}", 40000 + i)
        addr = build_teredo(0x20010000, "203.0.113.10", 0x1234, mapping[1], mapping[0])
        p = r.peers.create(addr, mapping, int(now))
        p.trusted = True
        to_clients.append(build_ipv6(NATIVE, addr, 17, bytes(1240)))
        # the source as recvfrom gives it: equal to the peer's mapping, not the same objects
        src = (mapping[0].encode().decode(), int(str(mapping[1])))
        from_clients.append((build_ipv6(addr, NATIVE, 17, bytes(1240)), src))
    return r, to_clients, from_clients


def bench(n: int) -> None:
    r, to_clients, from_clients = setup(PEERS)
    now = 100.5
    tun_rx = r.receive_tun_packet
    m = len(to_clients)
    t0 = time.perf_counter()
    for i in range(n):
        tun_rx(to_clients[i % m], now)
        if i % BATCH == 0:
            r.udp_out.clear()
    dt_tx = time.perf_counter() - t0
    assert r.counters.udp_out_packets == n, r.counters.as_dict()

    udp_rx = r.receive_datagram
    t0 = time.perf_counter()
    for i in range(n):
        data, src = from_clients[i % m]
        udp_rx(data, src, 0, now)
        if i % BATCH == 0:
            r.tun_out.clear()
    dt_rx = time.perf_counter() - t0
    assert r.counters.tun_out_packets == n, r.counters.as_dict()

    rows = (("TUN->UDP (receive_tun_packet)", dt_tx), ("UDP->TUN (receive_datagram)", dt_rx))
    for name, dt in rows:
        pps = n / dt
        print(f"{name:30s} {pps / 1e6:6.2f} Mpps  {dt / n * 1e9:6.0f} ns/pkt  "
              f"= {pps * 1280 * 8 / 1e9:5.2f} Gbit/s at 1280 B")


if __name__ == "__main__":
    bench(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
