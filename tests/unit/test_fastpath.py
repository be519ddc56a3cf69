"""The compiled relay loop against the Python reference: same packets out, same counters.

A real `Worker` drives a real `RelayRole` with one trusted peer; the TUN device is stood in
for by an ``AF_UNIX``/``SOCK_DGRAM`` socketpair (one packet per read/write, like a TUN
descriptor), the Teredo client by a UDP socket on loopback (as `bench/micro_wakeup.py`).
Every scenario runs on both data paths (the `data_path` fixture, `tests/conftest.py`), with
the peer's mapping either the one its address carries (the relay's case: the peer stores
none and the compiled path builds it from the key) or one it stores (a tuple).
"""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from engine.proto.addr import build_teredo
from engine.proto.relay import RelayRole
from engine.proto.wire import build_ipv6
from engine.runtime import fastpath
from engine.runtime.worker import Worker, WorkerResources

NATIVE = bytes.fromhex("20010db8000100000000000000000001")
NOT_TEREDO = bytes.fromhex("20010db8000200000000000000000002")
CLIENT = build_teredo(0x20010000, "203.0.113.10", 0, 40000, "198.51.100.7")
MAPPINGS = ["derived", "stored"]
STRANGER = build_teredo(0x20010000, "203.0.113.10", 0, 40001, "198.51.100.8")


class Rig:
    """A relay worker in a thread, its TUN end and its Teredo client."""

    def __init__(self, role: RelayRole | None = None, mapping: str = "stored") -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.tun_end, self.tun_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tun_end.settimeout(5)
        self.tun_worker.setblocking(False)
        self.parent, control = socket.socketpair()
        self.parent.settimeout(5)
        self.role = role or RelayRole(relay_type="cone", now=time.monotonic())
        ip, port = self.peer.getsockname()
        # "derived": the client's address carries its loopback endpoint, as R9a requires of
        # a real peer; "stored": it carries another one, so the peer keeps the tuple
        self.client = (build_teredo(0x20010000, "203.0.113.10", 0, port, ip)
                       if mapping == "derived" else CLIENT)
        self.p = self.role.peers.create(self.client, self.peer.getsockname(),
                                        int(time.monotonic()))
        assert (self.p._mapping is None) == (mapping == "derived")
        self.p.trusted = True
        self.p.bubbles = 2  # the hot receive path resets it
        res = WorkerResources(udp=[self.udp], control=control, tun_fd=self.tun_worker.fileno())
        cfg = SimpleNamespace(role="relay", syslog_facility=None)
        self.worker = Worker(cfg, self.role, res)  # type: ignore[arg-type]
        self.control = control
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as e:  # handed to the test
            self.error = e

    def __enter__(self) -> Rig:
        self.thread.start()
        assert b'"ready"' in self.parent.recv(4096)
        return self

    def stop(self) -> None:
        self.parent.close()  # EOF on the control socket: the worker stops
        self.thread.join(5)
        assert not self.thread.is_alive()

    def __exit__(self, *exc: Any) -> None:
        if self.thread.is_alive():
            self.stop()
        self.worker.close()
        for s in (self.udp, self.peer, self.tun_end, self.tun_worker, self.control):
            s.close()

    def relay(self) -> tuple[str, int]:
        return self.udp.getsockname()


def _scenario(rig: Rig) -> dict[str, Any]:
    """The same input on either path; what came out, and the state it left."""
    to_client = build_ipv6(NATIVE, rig.client, 17, bytes(range(200)))
    from_client = build_ipv6(rig.client, NATIVE, 17, bytes(300))
    out: dict[str, Any] = {}
    # hot TX: a burst to one peer (a GSO train where the batch allows) and lone packets
    for i in range(40):
        rig.tun_end.send(to_client[:-1] + bytes((i,)))
    # (a derived mapping puts each rig's own port in the address: compare without it)
    out["tx"] = sorted(rig.peer.recv(2048).replace(rig.client, CLIENT) for _ in range(40))
    # hot RX, one with bytes past the IPv6 payload (delivered without them)
    for i in range(10):
        rig.peer.sendto(from_client[:-1] + bytes((i,)), rig.relay())
    rig.peer.sendto(from_client + b"trailing", rig.relay())
    out["rx"] = [rig.tun_end.recv(2048).replace(rig.client, CLIENT) for _ in range(11)]
    out["bubbles_after_rx"] = rig.p.bubbles  # the hot path reset it (2 before)
    # Python path, TUN: a runt (worker drop), a non-Teredo destination (ICMPv6 error back)
    rig.tun_end.send(b"short")
    rig.tun_end.send(build_ipv6(NATIVE, NOT_TEREDO, 17, bytes(8)))
    icmp = rig.tun_end.recv(2048)
    out["icmp_type"] = (icmp[6], icmp[40])
    # Python path, UDP: a bubble from the peer, garbage, a known source from a wrong mapping
    # (another port on the peer's address, the peer's port on another address), a stranger;
    # each followed by a hot packet on the same socket, which comes out only after them
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other_addr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_addr.bind(("127.0.0.2", rig.peer.getsockname()[1]))
    try:
        for sender, data in ((rig.peer, build_ipv6(rig.client, NATIVE, 59, b"")),
                             (rig.peer, b"\x60garbage"),
                             (other, from_client),
                             (other_addr, from_client),
                             (other, build_ipv6(STRANGER, NATIVE, 17, bytes(8)))):
            sender.sendto(data, rig.relay())
            rig.peer.sendto(from_client, rig.relay())
            assert rig.tun_end.recv(2048) == from_client
    finally:
        other.close()
        other_addr.close()
    rig.tun_end.send(b"x" * 39)
    rig.tun_end.send(to_client)
    assert rig.peer.recv(2048) == to_client
    rig.stop()
    out["counters"] = rig.role.counters.as_dict()
    out["drops"] = dict(rig.worker.drops)
    out["peer"] = (rig.p.trusted, rig.p.bubbles, rig.p.pings, rig.p.queue,
                   rig.p.mapping == rig.peer.getsockname(), rig.p.stores_mapping)
    out["status_counters"] = rig.worker.status()["counters"]
    return out


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_both_paths_forward_and_count_the_same(data_path: str, mapping: str) -> None:
    with Rig(mapping=mapping) as rig:
        assert rig.worker.data_path == data_path
        assert rig.worker.status()["data_path"] == data_path
        got = _scenario(rig)
    with pytest.MonkeyPatch.context() as mp:  # the reference: the Python loop
        mp.setenv(fastpath.ENV, "0")
        ref = Rig(mapping=mapping)
    with ref:
        assert ref.worker.data_path == fastpath.PYTHON
        want = _scenario(ref)
    assert got == want
    c = got["counters"]
    assert c["tun_in_packets"] == 40 + 1 + 1 and c["udp_out_packets"] == 41
    assert c["udp_in_packets"] == 11 + 10 and c["tun_out_packets"] == 11 + 5 + 1
    assert got["drops"] == {"tun_short": 2}  # the worker's own; the role's in its counters
    d = c["drops"]
    assert d["tun_dst_not_teredo"] == 1 and d["parse_error"] == 1
    assert d["rx_mapping_mismatch"] == 3
    assert got["bubbles_after_rx"] == 0
    assert got["icmp_type"] == (58, 1)  # ICMPv6 destination unreachable
    assert got["peer"][4:] == (True, mapping == "stored")


def test_an_exception_in_the_role_leaves_the_loop(data_path: str) -> None:
    """As the Python loop does: the exception propagates out of `Worker.run`."""
    role = RelayRole(relay_type="cone", now=time.monotonic())

    def broken(*_a: Any) -> None:
        raise RuntimeError("role failed")

    role.receive_datagram = broken  # type: ignore[method-assign]
    with Rig(role) as rig:
        rig.peer.sendto(b"anything", rig.relay())
        rig.thread.join(5)
        assert isinstance(rig.error, RuntimeError) and str(rig.error) == "role failed"


def test_a_client_keeps_the_python_loop() -> None:
    from engine.proto.client import ClientRole

    assert fastpath.role_has_hot_path(RelayRole(relay_type="cone"))
    assert not fastpath.role_has_hot_path(object.__new__(ClientRole))


def test_the_compiled_module_is_built() -> None:
    """CI builds it from source (`pip install -e .`); a skip here fails under `make test`."""
    if not fastpath.available():
        pytest.skip(f"the compiled data path is not built: {fastpath.IMPORT_ERROR}")
    assert "compiled" in fastpath.describe() or not fastpath.wanted()
