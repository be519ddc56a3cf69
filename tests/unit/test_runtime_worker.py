"""The worker loop with a tiny echo role: batches, outputs, events, status, control."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time

import pytest

from engine.config import load_config
from engine.proto.counters import Counters
from engine.proto.events import InterfaceUp, StateChanged
from engine.proto.role import RoleBase
from engine.runtime import channel
from engine.runtime.loop import Loop
from engine.runtime.status_server import create_listener, query
from engine.runtime.worker import (
    Worker,
    WorkerResources,
    jsonable,
    needs_new_worker,
    role_fields_changed,
)

ADDR = ipaddress.IPv6Address("2001:0:c633:640a:8000:f227:bdf7:ffef").packed


class EchoRole(RoleBase):
    """Test-only role: echoes datagrams, goes "up" on b"up", counts, has a timer."""

    def __init__(self) -> None:
        self.udp_out: list = []
        self.tun_out: list = []
        self.raw6_out: list = []
        self.events: list = [StateChanged("running", "echo")]
        self.counters = Counters()
        self.kicks = 0
        self.timer_at: float | None = None
        self.timer_fired = 0
        self.reconfigured: list = []
        self.accept_reconfigure = True

    def receive_datagram(self, data, src, sock, now):
        self.counters.udp_in_packets += 1
        if data == b"up":
            self.events.append(InterfaceUp(ADDR, 1280))
        elif data == b"timer":
            self.timer_at = now
        elif data == b"badsock":
            self.udp_out.append((5, data, src))
        else:
            self.udp_out.append((sock, data, src))

    def next_timer(self):
        return self.timer_at

    def handle_timer(self, now):
        self.timer_at = None
        self.timer_fired += 1

    def kick(self, now):
        self.kicks += 1

    def reconfigure(self, config, now):
        self.reconfigured.append(config)
        return self.accept_reconfigure

    def status(self):
        return {"echo": True, "addr": ADDR, "kicks": self.kicks}


@pytest.fixture
def rig(tmp_path, data_path):
    """On both data paths: with the compiled one available the worker gets its loop, which
    must hand a role without the relay's hot path to the Python loop unchanged."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    parent, child = socket.socketpair()
    listener = create_listener(str(tmp_path / "s.sock"))
    conf = tmp_path / "r.conf"
    conf.write_text("RelayType cone\n")
    config = load_config(str(conf))
    role = EchoRole()
    res = WorkerResources(
        udp=[udp], control=child, status_listener=listener, info={"role": "echo", "pid": 1}
    )
    worker = Worker(config, role, res)
    assert worker.data_path == "python" and res.info["data_path"] == "python"
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    parent.settimeout(5)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.settimeout(5)
    buf = channel.LineBuffer()

    def read_line() -> bytes:
        while True:
            lines = buf.feed(parent.recv(4096))
            if lines:
                assert len(lines) == 1
                return lines[0]

    rig = type("Rig", (), {})()
    rig.worker, rig.role, rig.udp, rig.peer, rig.parent = worker, role, udp, peer, parent
    rig.read_line, rig.config, rig.conf = read_line, config, conf
    rig.sock_path = str(tmp_path / "s.sock")
    assert read_line() == b'{"op":"ready"}'
    yield rig
    parent.close()  # EOF: the worker stops on its own
    t.join(5)
    assert not t.is_alive()
    worker.close()
    for s in (udp, peer, child, listener):
        s.close()


def test_echo_batch_and_counters(rig):
    dst = rig.udp.getsockname()
    for i in range(200):  # more than one batch
        rig.peer.sendto(b"ping%d" % i, dst)
    got = {rig.peer.recvfrom(100)[0] for _ in range(200)}
    assert got == {b"ping%d" % i for i in range(200)}
    assert rig.role.counters.udp_in_packets == 200
    # the worker clears the list just after its last sendto, which may be after our last
    # recvfrom: give it a moment instead of racing it
    for _ in range(500):
        if not rig.role.udp_out:
            break
        time.sleep(0.01)
    assert rig.role.udp_out == []


def test_interface_up_becomes_a_parent_request_and_status(rig):
    rig.peer.sendto(b"up", rig.udp.getsockname())
    req = channel.parse_worker_request(rig.read_line(), 0x20010000)
    assert req == channel.Up(ADDR, 1280)
    st = query(rig.sock_path)
    assert st["address"] == str(ipaddress.IPv6Address(ADDR))
    assert st["addr"] == str(ipaddress.IPv6Address(ADDR))  # bytes made JSON-ready
    assert st["mtu"] == 1280 and st["state"] == "running" and st["echo"] is True
    assert st["role"] == "echo"
    assert st["counters"]["udp_in_packets"] == 1


def test_bad_socket_index_is_counted_not_fatal(rig):
    rig.peer.sendto(b"badsock", rig.udp.getsockname())
    rig.peer.sendto(b"after", rig.udp.getsockname())
    assert rig.peer.recvfrom(100)[0] == b"after"
    assert query(rig.sock_path)["counters"]["drops"]["udp_no_socket"] == 1


def test_role_timer_fires(rig):
    rig.peer.sendto(b"timer", rig.udp.getsockname())
    rig.peer.sendto(b"x", rig.udp.getsockname())
    assert rig.peer.recvfrom(100)[0] == b"x"
    for _ in range(50):
        if rig.role.timer_fired:
            break
        query(rig.sock_path)  # each query is a wake-up
    assert rig.role.timer_fired == 1


def test_kick_and_reload(rig):
    rig.parent.sendall(channel.kick_message())
    for _ in range(50):
        if query(rig.sock_path)["kicks"] == 1:
            break
    assert rig.role.kicks == 1
    same = load_config(str(rig.conf))
    rig.parent.sendall(channel.reload_message(same))
    assert json.loads(rig.read_line()) == {"op": "reloaded", "applied": True}
    assert rig.role.reconfigured == []  # nothing the role cares about changed
    rig.conf.write_text("RelayType cone\nInterfaceMTU 1400\n")
    rig.role.accept_reconfigure = False
    rig.parent.sendall(channel.reload_message(load_config(str(rig.conf))))
    assert json.loads(rig.read_line()) == {"op": "reloaded", "applied": False}
    assert rig.role.reconfigured[-1].interface_mtu == 1400


def test_status_unknown_command(rig):
    assert "unknown command" in query(rig.sock_path, "frobnicate")["error"]


def test_peers_command_of_a_role_without_peers(rig):
    assert query(rig.sock_path, "peers") == {
        "count": 0, "trusted": 0, "truncated": False, "peers": []
    }


def test_loop_timers_in_order_and_cancel():
    now = [100.0]
    loop = Loop(clock=lambda: now[0])
    fired: list[str] = []
    loop.call_at(102.0, lambda: fired.append("b"))
    loop.call_at(101.0, lambda: fired.append("a"))
    t = loop.call_at(101.5, lambda: fired.append("never"))
    t.cancel()
    now[0] = 103.0
    loop.run_once(max_wait=0)
    assert fired == ["a", "b"]
    loop.close()


def test_loop_deadline_source():
    now = [10.0]
    loop = Loop(clock=lambda: now[0])
    deadline = [12.0]
    fired: list[float] = []

    def fire(t):
        fired.append(t)
        deadline[0] = None

    loop.set_deadline_source(lambda: deadline[0], fire)
    loop.run_once(max_wait=0)
    assert fired == []
    now[0] = 12.5
    loop.run_once(max_wait=0)
    assert fired == [12.5]
    loop.close()


def _cfg(tmp_path, text):
    p = tmp_path / "c.conf"
    p.write_text(text)
    return load_config(str(p))


def test_reload_classification(tmp_path):
    base = _cfg(tmp_path, "RelayType cone\nBindPort 3545\n")
    facility = _cfg(tmp_path, "RelayType cone\nBindPort 3545\nSyslogFacility local1\n")
    port = _cfg(tmp_path, "RelayType cone\nBindPort 3546\n")
    mtu = _cfg(tmp_path, "RelayType cone\nBindPort 3545\nInterfaceMTU 1400\n")
    assert needs_new_worker(base, facility) == []
    assert not role_fields_changed(base, facility)
    assert needs_new_worker(base, port) == ["bind_port"]
    assert needs_new_worker(base, mtu) == ["interface_mtu"]
    assert role_fields_changed(base, mtu)


def test_jsonable():
    v4 = socket.inet_aton("192.0.2.1")
    out = jsonable({"a": (ADDR, v4, b"\x01\x02"), "s": {3, 1}})
    assert out == {"a": [str(ipaddress.IPv6Address(ADDR)), "192.0.2.1", "0102"], "s": [1, 3]}


def test_heartbeat_ping_is_answered_from_the_loop(rig):
    """Issue 9 flaw 7: the parent's ping gets a pong while the loop turns."""
    rig.parent.sendall(channel.ping_message())
    assert channel.parse_worker_request(rig.read_line(), 0x20010000) == channel.Pong()
    assert query(rig.sock_path)["worker"] == "running"


def test_watchdog_change_alone_does_not_reconfigure_the_role(rig):
    from engine.proto.records import replace

    assert not role_fields_changed(rig.config, replace(rig.config, worker_watchdog=30))
