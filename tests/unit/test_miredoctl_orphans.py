"""Issue 10, item 3 without root: engines are found and stopped without supervisord.

Stand-in engines are sleeping Pythons whose command line is an engine's (`-c CONF -p PIDFILE`
as render writes them). tests/kernel/test_miredoctl_supervisord_death.py does the same with a
real supervisord killed by `kill -9` and real engines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miredoctl import ops, status
from miredoctl.inventory import load_fleet
from miredoctl.state import StatePaths, fleet_processes, identify

SLEEPER = "import time; time.sleep(60)"


def _engine(paths: StatePaths, name: str, *, pidfile: bool = True) -> subprocess.Popen:
    """A stand-in engine: a sleeping Python whose argv carries `-c CONF -p PIDFILE` as
    render writes them, in its own process group as supervisord starts programs."""
    conf, pid = paths.config(name), paths.pidfile(name)
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, "-c", str(conf), "-p", str(pid)],
                            start_new_session=True)
    # Popen returns once exec began; the kernel shows the new argv a moment later
    deadline = time.monotonic() + 10
    while str(pid).encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the stand-in engine never showed its argv"
        time.sleep(0.01)
    if pidfile:
        pid.write_text(str(proc.pid))
    return proc


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    p.ensure()
    return p


@pytest.fixture
def engines() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:  # only the stand-ins this test started, by their pid
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_identify_needs_both_the_config_and_the_pid_file_of_this_fleet(paths: StatePaths) -> None:
    conf, pid = str(paths.config("relay")), str(paths.pidfile("relay"))
    assert identify(paths, ["teredo-engine", "-f", "-c", conf, "-p", pid]) == "relay"
    assert identify(paths, ["ip", "netns", "exec", "ns", "/usr/sbin/miredo", "-f", "-c", conf,
                            "-p", pid, "-u", "miredo"]) == "relay"
    assert identify(paths, ["vi", conf]) is None  # an editor is not an engine
    assert identify(paths, ["teredo-engine", "-c", conf, "-p", "/run/other.pid"]) is None
    assert identify(paths, ["teredo-engine", "-c", conf, "-p", str(paths.pidfile("c1"))]) is None
    other = StatePaths(paths.root.parent / "other")
    assert identify(other, ["teredo-engine", "-c", conf, "-p", pid]) is None
    assert identify(paths, ["python", "-m", "miredoctl.cli", "exporter", "--state-dir",
                            str(paths.root)]) == "_exporter"
    # relative to the process's working directory (supervisord runs in the state folder)
    assert identify(paths, ["teredo-engine", "-c", "configs/relay.conf", "-p",
                            "run/relay.pid"], cwd=str(paths.root)) == "relay"


def test_engines_are_found_by_pid_file_and_command_line(paths: StatePaths,
                                                        engines: list) -> None:
    relay = _engine(paths, "relay")
    client = _engine(paths, "c1", pidfile=False)  # no pid file (yet): its group leader
    engines += [relay, client]
    (paths.pidfile("gone")).write_text(str(os.getpid()))  # a recycled pid: not an engine
    found = fleet_processes(paths)
    assert set(found) == {"relay", "c1"}
    assert (found["relay"].pid, found["relay"].pgid) == (relay.pid, relay.pid)
    assert found["relay"].leads_group and found["c1"].pid == client.pid
    assert found["relay"].started is not None and abs(found["relay"].started - time.time()) < 60
    # supervisord holds the relay: only c1 runs without it
    procs = {"relay": {"name": "relay", "pid": relay.pid, "state": 20, "statename": "RUNNING"}}
    assert set(ops.unsupervised(paths, procs)) == {"c1"}
    assert set(ops.unsupervised(paths, None)) == {"relay", "c1"}


def test_stopping_an_orphan_stops_its_group_and_nothing_else(paths: StatePaths,
                                                             engines: list) -> None:
    relay = _engine(paths, "relay")
    bystander = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
    engines += [relay, bystander]
    ops.stop_fleet_process(fleet_processes(paths)["relay"], grace=5)
    assert relay.wait(timeout=5) == -15  # SIGTERM, as supervisord's stop sends
    assert bystander.poll() is None
    assert fleet_processes(paths) == {}


def test_status_shows_an_engine_without_supervisord_as_orphaned(tmp_path: Path,
                                                                 paths: StatePaths,
                                                                 engines: list) -> None:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    (fleet_dir / "defaults.yaml").write_text("allow_documentation_addresses: true\n")
    (fleet_dir / "r1.yaml").write_text("role: relay\n")
    (fleet_dir / "r2.yaml").write_text("role: relay\ninterface: teredo2\n")
    relay = _engine(paths, "r1")
    engines.append(relay)
    fleet = load_fleet(fleet_dir)
    rows = {r.name: r for r in status.collect(fleet, paths, ["r1", "r2"], None)}
    assert (rows["r1"].state, rows["r1"].pid) == (status.ORPHANED, relay.pid)
    assert "runs without supervisord" in (rows["r1"].error or "")
    assert not rows["r1"].up and not rows["r1"].ready
    assert (rows["r2"].state, rows["r2"].pid) == ("STOPPED", None)
    # supervisord says it stopped the instance, yet the engine runs: still ORPHANED
    procs = {"r1": {"name": "r1", "state": 0, "statename": "STOPPED", "pid": 0}}
    [row] = status.collect(fleet, paths, ["r1"], procs)
    assert (row.state, row.process_state, row.pid) == (status.ORPHANED, "STOPPED", relay.pid)


