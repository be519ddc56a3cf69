"""The worker's data path with real descriptors: a relay role between a UDP socket on loopback
and a packet socketpair standing in for the TUN device (same one-read-one-packet semantics).

What is checked is what reaches the other end: packets forwarded in order and unchanged in
both directions, UDP GSO trains cut back into the very same datagrams by the kernel (and seen
coalesced by a UDP_GRO receiver when the kernel offers it), and a path that refuses GSO
falling back to one datagram per send without losing any.
"""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from engine.proto.addr import build_teredo
from engine.proto.relay import RelayRole
from engine.proto.wire import build_ipv6
from engine.runtime.worker import (
    SOL_UDP,
    UDP_SEGMENT,
    Worker,
    WorkerResources,
    gso_supported,
)

NATIVE = bytes.fromhex("20010db8000100000000000000000001")
UDP_GRO = 104  # linux/udp.h
SO_NO_CHECK = 11  # asm-generic/socket.h: no UDP checksum on send, which GSO refuses


def _peer_addr(n: int) -> bytes:
    return build_teredo(0x20010000, "203.0.113.10", 0, 40000 + n, "198.51.100.7")


class Rig:
    """A running worker (in a thread) with one UDP socket and a fake TUN."""

    def __init__(self, n_peers: int = 2, no_check: bool = False, gro: bool = False,
                 prefill: list[bytes] = ()) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        if no_check:
            self.udp.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        self.tun_end, self.tun_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tun_end, self.tun_worker):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.tun_worker.setblocking(False)
        self.tun_end.settimeout(5)
        for p in prefill:  # queued before the worker runs: its first wake-up reads them all
            self.tun_end.send(p)
        self.control_parent, self.control = socket.socketpair()
        self.control_parent.settimeout(5)
        self.role = RelayRole(relay_type="cone", token_bytes=lambda n: bytes(n), now=100.0)
        self.peers = []
        self.gro = False
        for i in range(n_peers):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if gro and i == 0:
                try:
                    s.setsockopt(SOL_UDP, UDP_GRO, 1)
                    self.gro = True
                except OSError:
                    pass
            p = self.role.peers.create(_peer_addr(i), s.getsockname(), 100)
            p.trusted = True
            self.peers.append(s)
        cfg = SimpleNamespace(role="relay", syslog_facility=None)
        res = WorkerResources(udp=[self.udp], control=self.control,
                              tun_fd=self.tun_worker.fileno())
        self.worker = Worker(cfg, self.role, res, clock=lambda: 100.5)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.control_parent.recv(4096) == b'{"op":"ready"}\n'

    def close(self) -> None:
        self.control_parent.close()  # EOF: the worker stops
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.worker.close()
        for s in (self.udp, self.tun_end, self.tun_worker, self.control, *self.peers):
            s.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def _to(i: int, seq: int, size: int = 1200) -> bytes:
    return build_ipv6(NATIVE, _peer_addr(i), 17, seq.to_bytes(4, "big") + bytes(size - 4))


def test_udp_to_tun_each_packet_unchanged_and_in_order(rig):
    pkts = [build_ipv6(_peer_addr(0), NATIVE, 17, n.to_bytes(4, "big") + bytes(n % 300))
            for n in range(50)]
    for p in pkts:
        rig.peers[0].sendto(p, rig.udp.getsockname())
    got = [rig.tun_end.recv(65535) for _ in pkts]
    assert got == pkts
    assert rig.role.counters.tun_out_packets == 50


def test_tun_burst_to_one_peer_arrives_as_the_same_datagrams(rig):
    """A burst read in one batch leaves as GSO trains; the peer sees every packet, as sent."""
    burst = [_to(0, n) for n in range(60)] + [_to(0, 60, size=300)]  # short one ends a train
    for p in burst:
        rig.tun_end.send(p)
    got = [rig.peers[0].recv(65535) for _ in burst]
    assert got == burst
    assert not rig.worker.drops


def test_interleaved_peers_and_sizes_keep_order_per_peer(rig):
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    for n in range(80):
        i = (n // 7) % 2  # runs of 7 to one peer, then the other
        p = _to(i, n, size=1200 if n % 5 else 700)
        sent[i].append(p)
        rig.tun_end.send(p)
    for i in (0, 1):
        assert [rig.peers[i].recv(65535) for _ in sent[i]] == sent[i]


def test_lone_packets_then_a_burst_every_packet_in_order(rig):
    """After lone packets the readers read one packet per wake-up (no read that finds the
    queue empty); a burst that then arrives is still delivered whole and in order, both ways."""
    for n in range(5):  # lone packets, each answered before the next is sent
        rig.tun_end.send(_to(0, n))
        assert rig.peers[0].recv(65535) == _to(0, n)
        back = build_ipv6(_peer_addr(0), NATIVE, 17, n.to_bytes(4, "big"))
        rig.peers[0].sendto(back, rig.udp.getsockname())
        assert rig.tun_end.recv(65535) == back
    burst = [_to(0, n) for n in range(100, 140)]
    for p in burst:
        rig.tun_end.send(p)
    assert [rig.peers[0].recv(65535) for _ in burst] == burst
    back = [build_ipv6(_peer_addr(0), NATIVE, 17, n.to_bytes(4, "big")) for n in range(40)]
    for p in back:
        rig.peers[0].sendto(p, rig.udp.getsockname())
    assert [rig.tun_end.recv(65535) for _ in back] == back
    assert not rig.worker.drops


def test_gso_trains_are_coalesced_by_the_kernel():
    """A UDP_GRO receiver on loopback gets a GSO send as one buffer: proof that the worker
    sent a train in one call rather than datagram by datagram."""
    burst = [_to(0, n) for n in range(40)]
    r = Rig(gro=True, prefill=burst)
    try:
        if not (r.gro and gso_supported(r.udp)):
            pytest.skip("kernel without UDP GSO/GRO")
        data = b""
        reads = 0
        while len(data) < sum(map(len, burst)):
            data += r.peers[0].recv(65535)
            reads += 1
        assert data == b"".join(burst)
        assert reads < len(burst)
    finally:
        r.close()


def test_a_path_that_refuses_gso_falls_back_without_loss():
    """The kernel refuses GSO on a socket that sends without UDP checksums (EINVAL): the train
    goes out datagram by datagram and GSO stays off."""
    burst = [_to(0, n) for n in range(30)]
    r = Rig(no_check=True, prefill=burst)
    try:
        if not gso_supported(r.udp):
            pytest.skip("kernel without UDP GSO")
        assert [r.peers[0].recv(65535) for _ in burst] == burst
        assert r.worker._gso is False
        assert not r.worker.drops
    finally:
        r.close()


def test_gso_probe(monkeypatch):
    monkeypatch.delenv("TEREDO_NO_GSO", raising=False)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
            expected = True
        except OSError:
            expected = False
        assert gso_supported(s) is expected
        assert gso_supported(None) is False
    finally:
        s.close()


def test_gso_can_be_turned_off_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEREDO_NO_GSO", "1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert gso_supported(s) is False
    finally:
        s.close()
