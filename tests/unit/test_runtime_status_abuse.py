"""Issue 9 flaw 8: idle, slow and non-reading clients of the status socket.

The server runs in-process on a loop with a fake clock, pumped by the test, so timeouts are
exact and nothing sleeps: a fresh client must get its answer however many idle or slow-loris
connections are open, and the loop (the worker's packet path) must never wait on a client.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from engine.runtime import status_server as ss
from engine.runtime.loop import Loop
from engine.runtime.status_server import StatusServer, create_listener


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


BIG = {"rows": ["x" * 100] * 30000}  # ~3 MB of JSON: far more than a socket buffer


class Rig:
    def __init__(self, path: str) -> None:
        self.path = path
        self.clock = FakeClock()
        self.loop = Loop(self.clock)
        self.listener = create_listener(path)
        self.server = StatusServer(self.loop, self.listener, self.provide)
        self.socks: list[socket.socket] = []

    @staticmethod
    def provide(cmd: str) -> dict | None:
        if cmd == "status":
            return {"ok": True}
        if cmd == "peers":
            return BIG
        return None

    def pump(self, turns: int = 20) -> None:
        for _ in range(turns):
            self.loop.run_once(max_wait=0)

    def connect(self, send: bytes = b"") -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect(self.path)
        if send:
            s.send(send)
        self.socks.append(s)
        self.pump(1)  # the loop runs while clients connect
        return s

    def answer(self, s: socket.socket) -> dict:
        """Pump until `s` has its whole answer and EOF; the decoded object."""
        chunks = []
        for _ in range(2000):
            self.pump(2)
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return json.loads(b"".join(chunks))
            chunks.append(chunk)
        raise AssertionError("no complete answer")

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.server.close()
        self.loop.close()
        self.listener.close()


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    r = Rig(str(tmp_path / "s.sock"))
    try:
        yield r
    finally:
        r.close()


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_fresh_client_is_answered_past_idle_and_slow_loris_connections(rig):
    idle = [rig.connect() for _ in range(32)]
    rig.pump()
    slow = [rig.connect(b"sta") for _ in range(8)]  # a request that never ends
    rig.pump()
    assert len(rig.server.clients) <= ss.MAX_CLIENTS
    assert rig.answer(rig.connect(b"status\n")) == {"ok": True}
    # the oldest idle connections made room; the newest ones are still served
    assert closed_by_server(idle[0])
    assert rig.answer(rig.connect(b"status\n")) == {"ok": True}
    assert rig.server.stats["evicted"] >= 1
    del slow


def test_idle_and_slow_clients_are_cut_after_the_request_timeout(rig):
    idle = rig.connect()
    slow = rig.connect(b"st")
    rig.pump()
    rig.clock.t += ss.REQUEST_TIMEOUT - 0.1
    slow.send(b"a")  # trickling bytes does not extend the deadline
    rig.pump()
    assert not closed_by_server(idle) and not closed_by_server(slow)
    rig.clock.t += 0.2
    rig.pump()
    assert closed_by_server(idle) and closed_by_server(slow)
    assert rig.server.clients == {}
    assert rig.server.stats["timeouts"] == 2


def test_a_client_that_does_not_read_never_blocks_the_loop(rig):
    lazy = rig.connect(b"peers\n")
    rig.pump()  # returns at once: the answer is queued, not waited on
    assert rig.answer(rig.connect(b"status\n")) == {"ok": True}
    assert rig.answer(lazy) == BIG  # complete, once the client reads


def test_a_client_that_never_reads_is_dropped_after_the_reply_timeout(rig):
    lazy = rig.connect(b"peers\n")
    rig.pump()
    assert len(rig.server.clients) == 1
    rig.clock.t += ss.REPLY_TIMEOUT + 0.1
    rig.pump()
    assert rig.server.clients == {}
    lazy.close()


def test_too_long_request_is_an_error_answer(rig):
    s = rig.connect(b"x" * ss.MAX_REQUEST)
    assert "too long" in rig.answer(s)["error"]
