"""Issue 9 flaw 4: a client opens UDP 3544 only while an interface qualifies for local
discovery; the parent opens it later (when one appears) and hands it to the worker."""

from __future__ import annotations

import socket

import pytest

from engine.config import parse_config
from engine.proto.counters import Counters
from engine.proto.role import RoleBase
from engine.runtime import channel, sockets
from engine.runtime.discovery_select import qualifying
from engine.runtime.worker import Worker, WorkerResources

PRIVATE = ("eth0", "10.1.0.2", "255.255.255.0")
GLOBAL = ("eth1", "198.18.0.2", "255.255.255.0")  # not private: counts as global


def client_config(discovery: str = "enabled"):
    return parse_config(
        "ServerAddress 203.0.113.10\nBindAddress 127.0.0.1\n"
        f"LocalDiscovery {discovery}\n", "c.conf", resolver=lambda h: h)


def test_qualifying_is_the_roles_rule():
    assert qualifying([PRIVATE, GLOBAL], include_global=False) == [PRIVATE]
    assert qualifying([PRIVATE, GLOBAL], include_global=True) == [PRIVATE, GLOBAL]
    assert qualifying([GLOBAL], include_global=False) == []


@pytest.mark.parametrize(
    ("discovery", "listed"),
    [("enabled", []), ("enabled", [GLOBAL]), ("forced", [])],
)
def test_no_discovery_socket_without_a_qualifying_interface(monkeypatch, discovery, listed):
    opened = []
    monkeypatch.setattr(sockets, "open_discovery", lambda ifs: opened.append(ifs))
    gen = sockets.open_generation(client_config(discovery), lambda pattern: list(listed))
    try:
        assert opened == [] and len(gen.udp) == 1
        assert gen.discovery == listed  # the role still gets the list
        assert gen.bound == ["127.0.0.1:" + gen.bound[0].split(":")[1]]
    finally:
        gen.close()


def test_no_discovery_socket_while_the_list_is_pending(monkeypatch):
    opened = []
    monkeypatch.setattr(sockets, "open_discovery", lambda ifs: opened.append(ifs))
    gen = sockets.open_generation(client_config(), None)
    try:
        assert opened == [] and len(gen.udp) == 1 and gen.discovery_pending
    finally:
        gen.close()


def test_a_qualifying_interface_opens_it_on_those_interfaces_only(monkeypatch):
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))
    opened = []

    def open_discovery(ifs):
        opened.append(ifs)
        return fake

    monkeypatch.setattr(sockets, "open_discovery", open_discovery)
    gen = sockets.open_generation(client_config(), lambda pattern: [PRIVATE, GLOBAL])
    try:
        assert opened == [[("eth0", "10.1.0.2")]]
        assert gen.udp[2] is fake and gen.discovery == [PRIVATE, GLOBAL]
    finally:
        gen.close()


class Recorder(RoleBase):
    def __init__(self) -> None:
        self.udp_out: list = []
        self.tun_out: list = []
        self.raw6_out: list = []
        self.events: list = []
        self.counters = Counters()
        self.got: list = []
        self.discovery: list = []

    def receive_datagram(self, data, src, sock, now):
        self.got.append((data, sock))

    def set_discovery_interfaces(self, ifaces):
        self.discovery = list(ifaces)

    def next_timer(self):
        return None

    def handle_timer(self, now):
        pass

    def status(self):
        return {}


def test_worker_takes_the_socket_from_the_parent_and_drops_it_on_request():
    main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main.bind(("127.0.0.1", 0))
    main.setblocking(False)
    parent, child = socket.socketpair()
    role = Recorder()
    res = WorkerResources(udp=[main], control=child, info={"bound": ["127.0.0.1:1"]})
    worker = Worker(None, role, res, clock=lambda: 1.0)
    dsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dsock.bind(("127.0.0.1", 0))
    port = dsock.getsockname()[1]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        socket.send_fds(parent, [channel.discovery_socket_message(True)], [dsock.fileno()])
        dsock.close()  # the parent keeps no copy
        worker.loop.run_once(max_wait=1.0)
        assert res.udp[2] is not None
        assert f"127.0.0.1:{port}" in res.info["bound"]
        peer.sendto(b"hello", ("127.0.0.1", port))
        worker.loop.run_once(max_wait=1.0)
        assert role.got == [(b"hello", 2)]

        parent.sendall(channel.discovery_socket_message(False))
        worker.loop.run_once(max_wait=1.0)
        assert res.udp[2] is None
        assert res.info["bound"] == [f"127.0.0.1:{main.getsockname()[1]}"]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # the port is free again: really closed
        probe.close()
    finally:
        worker.close()
        for s in (main, parent, child, peer):
            s.close()
