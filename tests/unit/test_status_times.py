"""Every time in the status JSON is Unix wall-clock seconds (contracts.md §4).

Roles run on a monotonic clock; a monotonic value leaking into the status (miredoctl once saw
`last_qualified: 810.8`) makes "qualified 55 years ago".  Each role is driven to its busiest
state with a monotonic clock near 800 s, and every numeric field whose name says "time" is
checked, at any depth of the JSON.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.config import parse_config
from engine.proto.client import ClientRole
from engine.proto.relay import RelayRole
from engine.proto.server import ServerRole
from engine.runtime.worker import Worker, WorkerResources

SERVER, SERVER2 = "203.0.113.10", "203.0.113.11"
MAPPED = ("198.51.100.1", 40000)
MONO = 800.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _time_like(key: str) -> bool:
    k = key.lower()
    return (k.startswith(("last_", "next_")) or k.endswith(("_at", "_time", "_seen", "_since"))
            or k in ("started", "since", "time", "timestamp", "expires"))


def time_fields(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if _time_like(str(k)) and isinstance(v, (int, float)) and not isinstance(v, bool):
                yield where, v
            yield from time_fields(v, where)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from time_fields(v, f"{path}[{i}]")


def qualified_client(clock: FakeClock) -> ClientRole:
    """A client qualified by our server role, in memory, with the monotonic clock at ~800 s."""
    client = ClientRole(server=SERVER, server2=SERVER2, now=clock.now, ping_ident=1)
    server = ServerRole(SERVER, SERVER2, now=clock.now)
    assert client.next_timer() == clock.now  # the first RS goes out at once
    client.handle_timer(clock.now)
    (_, rs, dst), = client.udp_out
    client.udp_out.clear()
    assert dst == (SERVER, 3544)
    server.receive_datagram(rs, MAPPED, 0, clock.now)
    (_, ra, to), = server.udp_out
    assert to == MAPPED
    clock.now += 0.05
    client.receive_datagram(ra, (SERVER, 3544), 0, clock.now)
    assert client.up and client.last_qualified == pytest.approx(MONO + 0.05)
    clock.now += 10.0  # the status is read a while later
    return client


def worker_status(role: Any, text: str, clock: FakeClock) -> dict[str, Any]:
    config = parse_config(text, "t.conf", resolver=lambda h: h)
    a, b = socket.socketpair()
    try:
        res = WorkerResources(udp=[], control=b,
                              info={"role": config.role, "started": time.time() - 10})
        w = Worker(config, role, res, clock=clock)
        w.flush()  # events the role queued (InterfaceUp, StateChanged)
        st = w.status()
        w.close()
    finally:
        a.close()
        b.close()
    return json.loads(json.dumps(st))  # what the socket sends


@pytest.mark.parametrize("kind", ["client", "relay", "server"])
def test_every_status_time_is_wall_clock(kind: str) -> None:
    clock = FakeClock(MONO)
    if kind == "client":
        role: Any = qualified_client(clock)
        text = f"ServerAddress {SERVER}\n"
    elif kind == "relay":
        role = RelayRole(relay_type="cone", now=clock.now, token_bytes=lambda n: bytes(n))
        text = "RelayType cone\n"
    else:
        role = ServerRole(SERVER, SERVER2, now=clock.now)
        text = f"ServerBindAddress {SERVER}\n"
    st = worker_status(role, text, clock)
    fields = dict(time_fields(st))
    assert "started" in fields
    if kind == "client":
        assert "last_qualified" in fields and "server_last_seen" in fields
        assert fields["last_qualified"] == pytest.approx(time.time() - 10.0, abs=5.0)
    now = time.time()
    wrong = {k: v for k, v in fields.items() if abs(v - now) > 86400}
    assert wrong == {}, f"monotonic (not Unix) times in the {kind} status: {wrong}"
