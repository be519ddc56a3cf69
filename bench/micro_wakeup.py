"""Micro-benchmark of one wake-up of the real worker loop (not a test).

    .venv/bin/python -m bench.micro_wakeup [packets]

A ``Worker`` drives a ``RelayRole`` with one trusted peer.  The TUN device is stood in for by an
``AF_UNIX``/``SOCK_DGRAM`` socketpair (same read/write-one-packet semantics as a TUN descriptor),
the peer by a UDP socket on loopback.  A driver in a *separate process* (no GIL sharing) sends
one packet at a time and waits for the forwarded copy, so every packet costs a full wake-up:
epoll, read, role, flush, write.  It reports the median/p90 round trip through the worker in
each direction and, flat out (a window of packets in flight), packets per second.  The numbers
isolate the Python cost per wake-up from the lab's kernel paths and from the machine's load.

To see where a wake-up's time goes, trace the worker (the driver's child) while it runs with
``--gap 0.01``: ``perf record -e sched:sched_switch,raw_syscalls:sys_enter,raw_syscalls:sys_exit
-p WORKER_PID`` and measure, per wake-up, epoll_wait's return to the first read(2) and to the
output sendto(2)/write(2).  On the 2-core lab VM (Nov 2026): our worker 26-31 us to the output
syscall (p50); a bare 10-line Python epoll forwarder 20-22 us; the same in C 5 us.  Most of
the difference is CPython resuming cold after sleeping, not work the engine chooses to do.
"""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

from engine.proto.addr import build_teredo
from engine.proto.relay import RelayRole
from engine.proto.wire import build_ipv6
from engine.runtime.worker import Worker, WorkerResources

NATIVE = bytes.fromhex("20010db8000100000000000000000001")


def _pcts(samples: list[float]) -> str:
    s = sorted(samples)
    n = len(s)
    return (f"min {s[0] * 1e6:6.1f}  p50 {s[n // 2] * 1e6:6.1f}  p90 {s[int(n * 0.9)] * 1e6:6.1f}"
            f"  avg {sum(s) / n * 1e6:6.1f} us")


def _cpu_ns(pid: int) -> int:
    """CPU time of `pid` so far, in ns (/proc/PID/schedstat: the scheduler's own account, far
    finer than the clock ticks of /proc/PID/stat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _driver(tun_end: socket.socket, peer: socket.socket, relay_addr: tuple[str, int],
            to_client: bytes, from_client: bytes, n: int, window: int, gap: float,
            worker: int) -> None:
    tun_end.settimeout(5)
    peer.settimeout(5)
    for _ in range(200):  # warm-up
        tun_end.send(to_client)
        peer.recv(2048)
    lat_tx = []
    cpu0 = _cpu_ns(worker)
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        tun_end.send(to_client)
        peer.recv(2048)
        lat_tx.append(time.perf_counter() - t0)
    cpu_tx = _cpu_ns(worker) - cpu0
    lat_rx = []
    cpu0 = _cpu_ns(worker)
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        peer.sendto(from_client, relay_addr)
        tun_end.recv(2048)
        lat_rx.append(time.perf_counter() - t0)
    cpu_rx = _cpu_ns(worker) - cpu0
    if gap:
        print(f"(packets {gap * 1e3:g} ms apart: the worker sleeps in epoll_wait between them)")
    print(f"one packet TUN->UDP  {_pcts(lat_tx)}  worker CPU {cpu_tx / n / 1e3:5.1f} us/packet")
    print(f"one packet UDP->TUN  {_pcts(lat_rx)}  worker CPU {cpu_rx / n / 1e3:5.1f} us/packet")
    # throughput: keep `window` packets in flight
    for name, send, recv in (
        ("TUN->UDP", lambda: tun_end.send(to_client), lambda: peer.recv(2048)),
        ("UDP->TUN", lambda: peer.sendto(from_client, relay_addr), lambda: tun_end.recv(2048)),
    ):
        total = n * 10
        t0 = time.perf_counter()
        for _ in range(window):
            send()
        for i in range(total):
            recv()
            if i + window < total:
                send()
        dt = time.perf_counter() - t0
        print(f"flat out {name}  {total / dt / 1000:7.1f} kpps (window {window})")


def main(n: int = 3000, window: int = 32, gap: float = 0.0, mapping: str = "derived") -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    tun_end, tun_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (tun_end, tun_worker):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tun_worker.setblocking(False)
    control_parent, control = socket.socketpair()
    ip, port = peer.getsockname()
    # "derived": the peer's address carries its loopback endpoint, as a relay's real peers do
    # (R9a, docs/protocol.md), so its entry stores no mapping; "stored": another endpoint,
    # so the entry keeps the tuple (the only case before issue 15's lean peer table)
    if mapping == "derived":
        addr = build_teredo(0x20010000, "203.0.113.10", 0, port, ip)
    else:
        addr = build_teredo(0x20010000, "203.0.113.10", 0, 40000, "198.51.100.7")
    to_client = build_ipv6(NATIVE, addr, 17, bytes(1200))
    from_client = build_ipv6(addr, NATIVE, 17, bytes(1200))
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            control_parent.close()
            role = RelayRole(relay_type="cone", now=time.monotonic())
            p = role.peers.create(addr, (ip, port), int(time.monotonic()))
            p.trusted = True
            cfg = SimpleNamespace(role="relay", syslog_facility=None)
            res = WorkerResources(udp=[udp], control=control, tun_fd=tun_worker.fileno())
            Worker(cfg, role, res).run()
        finally:
            os._exit(0)
    control.close()
    control_parent.recv(4096)  # "ready"
    try:
        _driver(tun_end, peer, udp.getsockname(), to_client, from_client, n, window, gap, pid)
    finally:
        control_parent.close()  # EOF: the worker exits
        os.waitpid(pid, 0)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packets", nargs="?", type=int, default=3000)
    ap.add_argument("--gap", type=float, default=0.0,
                    help="seconds between single packets (0.01 = the lab's ping -i 0.01)")
    ap.add_argument("--window", type=int, default=32, help="packets in flight, flat out")
    ap.add_argument("--mapping", choices=("derived", "stored"), default="derived",
                    help="the peer's mapping: the one its address carries, or another")
    a = ap.parse_args()
    main(a.packets, a.window, a.gap, a.mapping)
