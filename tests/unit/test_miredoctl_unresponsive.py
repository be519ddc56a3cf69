"""Issue 10, item 8: a frozen engine is UNRESPONSIVE, not "qualified", and `status` exits 3.

A socket that accepts and never answers stands in for an engine whose worker is stopped; a
socket answering `"worker": "unresponsive"` stands in for a parent that answers for its frozen
worker (contract §4). tests/kernel/test_miredoctl_faults.py SIGSTOPs a real worker.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from supervisor.states import ProcessStates

from miredoctl import cli, status
from miredoctl.inventory import load_fleet
from miredoctl.state import StatePaths

T0 = 1_764_130_000.0


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "c1.yaml").write_text("role: client\nserver: 203.0.113.10\ninterface: tdo-u1\n")
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    real = status.query_engine
    monkeypatch.setattr(status, "query_engine", lambda path: real(path, timeout=0.3))
    # the kernel view must not be what decides: it would find the (stale) address
    monkeypatch.setattr(status, "interface_view", lambda inst, st, kernel=None: setattr(
        st, "tunnel_state", "qualified"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(paths.status_socket("c1")))
    sock.listen(4)
    yield load_fleet(fleet), paths, sock
    sock.close()


def _running(pid: int) -> dict:
    return {"c1": {"state": ProcessStates.RUNNING, "statename": "RUNNING", "pid": pid,
                   "start": T0, "now": T0 + 60}}


def test_a_status_socket_that_does_not_answer_is_unresponsive(setup) -> None:
    fleet, paths, _silent = setup  # listens, never accepts: a stopped worker
    [row] = status.collect(fleet, paths, ["c1"], _running(4242), now=T0 + 60)
    assert row.state == "UNRESPONSIVE" and row.process_state == "RUNNING"
    assert row.tunnel_state == "unresponsive" and not row.up and not row.ready
    assert "did not answer within" in row.error
    assert cli._status_code([row], reachable=True) == 3
    assert status.table([row]).splitlines()[1].split()[3] == "UNRESPONSIVE"


def test_a_parent_answering_for_a_frozen_worker_is_unresponsive(setup) -> None:
    fleet, paths, sock = setup

    def answer() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(100)
            conn.sendall(json.dumps({
                "pid": 4242, "role": "client", "state": None, "worker": "unresponsive",
                "worker_pid": 4243, "worker_silent": 4.2, "started": T0}).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    [row] = status.collect(fleet, paths, ["c1"], _running(4242), now=T0 + 60)
    thread.join(5)
    assert (row.state, row.tunnel_state) == ("UNRESPONSIVE", "worker unresponsive")
    assert "worker (pid 4243) is unresponsive: silent for 4.2 s" in row.error
    assert not row.ready and cli._status_code([row], reachable=True) == 3


def test_a_worker_that_runs_is_not_flagged(setup) -> None:
    fleet, paths, sock = setup

    def answer() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(100)
            conn.sendall(json.dumps({
                "pid": 4242, "role": "client", "state": "qualified", "worker": "running",
                "address": "2001:0:cb00:710a:c9:3c53:39cc:9bfe", "started": T0}).encode()
                + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    [row] = status.collect(fleet, paths, ["c1"], _running(4242), now=T0 + 60)
    thread.join(5)
    assert (row.state, row.tunnel_state, row.ready) == ("RUNNING", "qualified", True)
