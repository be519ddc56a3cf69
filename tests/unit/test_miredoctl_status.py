"""`status` rows from supervisord's view + the engine's status socket + the restart history.

The engine side is a real unix socket answering the contract §4 JSON, standing in for an engine
process (or a leftover one), so the pid check and the history rules run end to end.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervisor.states import ProcessStates

from miredoctl.inventory import load_fleet
from miredoctl.listeners import history
from miredoctl.state import StatePaths
from miredoctl.status import collect, table

T0 = 1_764_130_000.0
ADDR = "2001:0:cb00:710a:c9:3c53:39cc:9bfe"


@pytest.fixture
def fleet_paths(tmp_path: Path) -> tuple[Path, StatePaths]:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "c1.yaml").write_text("role: client\nserver: 203.0.113.10\ninterface: tdo-x9\n")
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    return fleet, paths


class EngineSocket:
    """Answers every `status` request with the given pid until closed."""

    def __init__(self, path: Path, pid: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.pid = pid
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)
                conn.sendall(json.dumps({
                    "pid": self.pid, "role": "client", "state": "qualified", "address": ADDR,
                    "interface": "tdo-x9", "mapped": {"ip": "198.51.100.1", "port": 50092},
                    "started": T0, "worker_restarts": 0}).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def engine(fleet_paths) -> Iterator:
    made: list[EngineSocket] = []

    def start(pid: int) -> EngineSocket:
        s = EngineSocket(fleet_paths[1].status_socket("c1"), pid)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


def running(pid: int) -> dict:
    return {"c1": {"state": ProcessStates.RUNNING, "statename": "RUNNING", "pid": pid,
                   "start": T0, "now": T0 + 60}}


def test_ready_needs_the_socket_to_answer_with_supervisords_pid(fleet_paths, engine) -> None:
    fleet_dir, paths = fleet_paths
    fleet = load_fleet(fleet_dir)
    # nothing answers (the engine just died): running per supervisord, but not ready
    [row] = collect(fleet, paths, ["c1"], running(4242), now=T0 + 60)
    assert row.up and not row.ready and "status socket" in row.error
    # the engine answers as the process supervisord runs: ready, qualified
    srv = engine(4242)
    [row] = collect(fleet, paths, ["c1"], running(4242), now=T0 + 60)
    assert row.ready and row.address == ADDR and row.source.startswith("status socket")
    srv.close()
    paths.status_socket("c1").unlink()
    # a leftover engine answers on our socket: none of its data is shown, not ready
    engine(777)
    [row] = collect(fleet, paths, ["c1"], running(4242), now=T0 + 60)
    assert not row.ready and row.address is None
    assert "answered by pid 777, but supervisord runs pid 4242" in row.error


def test_restarts_and_flapping_come_from_the_history(fleet_paths, engine) -> None:
    fleet_dir, paths = fleet_paths
    fleet = load_fleet(fleet_dir)
    engine(4242)
    hist = paths.history("c1")
    history.record(hist, history.Transition(T0, "STARTING", "STOPPED"))
    history.record(hist, history.Transition(T0 + 2, "RUNNING", "STARTING", 4000))
    for i, t in enumerate((T0 + 10, T0 + 20)):
        history.record(hist, history.Transition(t, "EXITED", "RUNNING", 4000 + i, False))
        history.record(hist, history.Transition(t, "STARTING", "EXITED"))
    [row] = collect(fleet, paths, ["c1"], running(4242), now=T0 + 60)
    assert (row.state, row.restarts, row.flapping, row.ready) == ("RUNNING", 2, False, True)
    assert row.last_exit == T0 + 20
    history.record(hist, history.Transition(T0 + 30, "EXITED", "RUNNING", 4002, False))
    history.record(hist, history.Transition(T0 + 30, "STARTING", "EXITED"))
    [row] = collect(fleet, paths, ["c1"], running(4242), now=T0 + 60)
    assert (row.state, row.process_state, row.restarts) == ("FLAPPING", "RUNNING", 3)
    assert not row.up and not row.ready  # status exits 3, wait keeps waiting
    assert table([row]).splitlines()[1].split()[3:7] == ["FLAPPING", "4242", "0:01:00", "3"]
    # quiet for longer than the window: RUNNING again, the count stays
    later = T0 + 30 + history.FLAP_WINDOW + 1
    [row] = collect(fleet, paths, ["c1"], running(4242), now=later)
    assert (row.state, row.restarts, row.ready) == ("RUNNING", 3, True)
