"""Boot, layout and host-wide fleets, for real: a "reboot" brought back by the unit that
`miredoctl service install` writes, a fleet still running from the hash-named folder of an
earlier release adopted and then moved, and one fleet refusing to start what another runs.

Every folder (runtime, persistent, logs, units) is under the test's tmp_path through the
MIREDOCTL_*_BASE variables; engines are found and stopped by pid, never by name.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miredoctl.state import StatePaths, fleet_hash, fleet_processes
from teredolab import netns
from teredolab.topology import NetnsLab
from tests.kernel.conftest import module_lab
from tests.kernel.test_miredoctl_fleet import ENGINE_ROLES, make_fleet

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def boot_lab() -> Iterator[NetnsLab]:
    yield from module_lab()


class Host:
    """One host's miredoctl folders under a tmp folder, and every fleet started there."""

    def __init__(self, lab: NetnsLab, where: Path) -> None:
        self.lab, self.where = lab, where
        self.base_env = {"MIREDOCTL_RUN_BASE": str(where / "run"),
                         "MIREDOCTL_LIB_BASE": str(where / "lib"),
                         "MIREDOCTL_LOG_BASE": str(where / "log")}
        self.fleets: list[Path] = []
        self.state_dirs: list[Path] = []

    def fleet(self, name: str) -> Path:
        dest = make_fleet(self.lab, self.where / name)
        with (dest / "defaults.yaml").open("a") as fh:
            fh.write(f"name: {name}\n")
        self.fleets.append(dest)
        return dest

    def paths(self, name: str) -> StatePaths:
        return StatePaths(self.where / "run" / name, self.where / "lib" / name,
                          self.where / "log" / name, name=name)

    def env(self, fleet: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIREDOCTL_")}
        env.update(self.base_env)
        if fleet is not None:
            env["MIREDOCTL_FLEET"] = str(fleet)
        return env

    def run(self, fleet: Path | None, *args: str, expect: int | None = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args],
                              env=env or self.env(fleet), capture_output=True, text=True,
                              timeout=180)
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def status(self, fleet: Path, *extra: str) -> dict[str, dict[str, Any]]:
        data = json.loads(self.run(fleet, *extra, "status", "--json", expect=None).stdout)
        return {row["name"]: row for row in data["instances"]}

    def cleanup(self) -> None:
        """`down` every fleet, then stop by pid whatever is left of it (a failed test)."""
        for fleet in self.fleets:
            self.run(fleet, "down", "--all", expect=None)
        for d in [*self.state_dirs, *(p for p in (self.where / "run").glob("*") if p.is_dir())]:
            paths = StatePaths(d) if d in self.state_dirs or len(d.name) == 12 else \
                self.paths(d.name)
            kill_fleet(paths)
        left = {r: netns.pids(self.lab.ns(r)) for r in ENGINE_ROLES
                if netns.pids(self.lab.ns(r))}
        if left:
            netns.stop_pids([p for pids in left.values() for p in pids])
        assert not left, f"processes left in lab namespaces: {left}"


def kill_fleet(paths: StatePaths) -> list[int]:
    """SIGKILL supervisord and every process of the fleet, by pid; wait until they are gone."""
    pids = [p for proc in fleet_processes(paths).values() for p in proc.members]
    try:
        pids.append(int(paths.supervisord_pid.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                              "Z" not in _state(p) for p in pids):
        time.sleep(0.1)
    return pids


def _state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return "X"


@pytest.fixture
def host(boot_lab: NetnsLab, tmp_path: Path) -> Iterator[Host]:
    h = Host(boot_lab, tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


def unit_exec(unit: Path) -> dict[str, list[str]]:
    """The unit's lines as systemd would run them (no specifiers or variables in ours)."""
    out = {}
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecReload", "ExecStop", "PIDFile"):
            assert "%" not in value and "$" not in value, line
            out[key] = shlex.split(value)
    return out


def wait_for(cond, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(host: Host, fleet: Path) -> list[tuple[str, str]]:
    data = json.loads(host.run(fleet, "logs", "--json", "-n", "100000").stdout)
    return [(ln["name"], ln["text"]) for ln in data["lines"]]


def test_reboot_is_undone_by_the_units_own_lines(host: Host) -> None:
    name = f"boot-{host.lab.spec.prefix.strip('-')}"
    fleet = host.fleet(name)
    units = host.where / "units"
    host.run(fleet, "service", "install", "--unit-dir", str(units))
    unit = units / f"miredoctl-{name}.service"
    lines = unit_exec(unit)
    paths = host.paths(name)
    assert lines["PIDFile"] == [str(paths.supervisord_pid)]
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MIREDOCTL_")}

    def systemd_runs(key: str) -> None:
        """As systemd would: the argv of the line, no MIREDOCTL_* in the environment."""
        began = time.monotonic()
        proc = subprocess.run(lines[key], env=bare, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, (key, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        print(f"{key}: {time.monotonic() - began:.2f} s")  # for the record, never asserted

    def supervisord_pid() -> int:
        pid = int(Path(lines["PIDFile"][0]).read_text().split()[0])  # Type=forking's main pid
        assert Path(f"/proc/{pid}").exists()
        return pid

    systemd_runs("ExecStart")
    first_supervisord = supervisord_pid()
    host.run(fleet, "wait", "--timeout", "60")
    # one crash before the reboot: supervisord restarts client1, the history counts it
    old = host.status(fleet)["client1"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (r := host.status(fleet)["client1"])["process_state"] == "RUNNING"
             and r["pid"] not in (None, old), "client1 restarted by supervisord")
    host.run(fleet, "wait", "--timeout", "60")
    before = host.status(fleet)
    assert before["client1"]["restarts"] == 1
    assert all(r["restarts"] == 0 for n, r in before.items() if n != "client1")
    logs_before = log_lines(host, fleet)
    assert logs_before, "no log lines before the reboot"

    # the "reboot": every process of the fleet dies at once, /run is empty afterwards
    killed = kill_fleet(paths)
    assert first_supervisord in killed and len(killed) >= 1 + len(before)
    shutil.rmtree(paths.root)
    assert all(Path(f"/proc/{p}").exists() is False or _state(p) == "Z" for p in killed)
    host.run(fleet, "status", expect=4)  # nothing runs

    systemd_runs("ExecStart")
    second_supervisord = supervisord_pid()
    assert second_supervisord != first_supervisord
    host.run(fleet, "wait", "--timeout", "60")  # every instance RUNNING, clients qualified
    after = host.status(fleet)
    assert set(after) == set(before)
    assert all(r["state"] == "RUNNING" and r["pid"] for r in after.values()), after
    assert {n: r["restarts"] for n, r in after.items()} == \
        {n: r["restarts"] for n, r in before.items()}
    logs_after = log_lines(host, fleet)
    missing = [ln for ln in logs_before if ln not in logs_after]
    assert not missing, f"log lines from before the reboot are gone: {missing[:3]}"
    assert len(logs_after) > len(logs_before)  # and the new lives logged too

    pids = {n: r["pid"] for n, r in after.items()}
    systemd_runs("ExecReload")  # SIGHUP to every engine: same processes afterwards
    host.run(fleet, "wait", "--timeout", "60")
    assert {n: r["pid"] for n, r in host.status(fleet).items()} == pids

    systemd_runs("ExecStop")
    wait_for(lambda: not Path(f"/proc/{second_supervisord}").exists()
             or _state(second_supervisord) == "Z", "supervisord gone after ExecStop")
    assert fleet_processes(paths) == {}
    listed = json.loads(host.run(None, "ls", "--json").stdout)
    assert [(r["name"], r["state"], r["running"], r["total"]) for r in listed] == \
        [(name, "stopped", 0, len(before))]


def test_a_fleet_running_from_the_old_hash_folder_is_adopted_then_moved(host: Host) -> None:
    name = f"legacy-{host.lab.spec.prefix.strip('-')}"
    fleet = host.fleet(name)
    old = host.where / "run" / fleet_hash(fleet)
    host.state_dirs.append(old)
    # what an earlier release ran: everything in /run/miredoctl/<hash of the fleet path>/
    host.run(fleet, "--state-dir", str(old), "up", "--all")
    host.run(fleet, "--state-dir", str(old), "wait", "--timeout", "60")
    pids = {n: r["pid"] for n, r in host.status(fleet, "--state-dir", str(old)).items()}
    history_before = (old / "history" / "relay.jsonl").read_text()

    # this release, default folders: the running fleet is found where it runs
    adopted = host.status(fleet)
    assert {n: r["pid"] for n, r in adopted.items()} == pids
    assert all(r["state"] == "RUNNING" for r in adopted.values())
    up = json.loads(host.run(fleet, "up", "--all", "--json").stdout)["results"]
    assert {r["name"]: r["action"] for r in up} == {n: "unchanged" for n in pids}
    listed = json.loads(host.run(None, "ls", "--json").stdout)
    assert [(r["name"], r["state"], r["running"], r["run_dir"]) for r in listed] == \
        [(name, "running", len(pids), str(old))]
    assert not (host.where / "run" / name).exists()

    host.run(fleet, "down", "--all")  # the next command moves the fleet to its named folders
    proc = host.run(fleet, "status", expect=4)
    assert "moved this fleet's histories and logs" in proc.stderr
    assert not old.exists()
    paths = host.paths(name)
    moved = paths.history("relay").read_text()
    assert moved.startswith(history_before) and len(moved) > len(history_before)
    assert paths.log("relay").stat().st_size > 0

    host.run(fleet, "up", "--all")
    host.run(fleet, "wait", "--timeout", "60")
    assert paths.socket.exists() and paths.config("relay").exists()
    listed = json.loads(host.run(None, "ls", "--json").stdout)
    assert [(r["name"], r["state"], r["running"], r["run_dir"]) for r in listed] == \
        [(name, "running", len(pids), str(paths.root))]


def test_up_refuses_what_another_fleet_runs_in_the_same_namespace(host: Host) -> None:
    tag = host.lab.spec.prefix.strip("-")
    first, second = host.fleet(f"blue-{tag}"), host.fleet(f"green-{tag}")
    host.run(first, "up", "--all")
    host.run(first, "wait", "--timeout", "60")
    pids = {n: r["pid"] for n, r in host.status(first).items()}

    proc = host.run(second, "up", "--all", expect=1)
    err = proc.stderr
    client_ns = host.lab.ns("cli")
    assert (f"instance client1: interface 'teredo' in netns {client_ns} is held by instance "
            f"client1 of fleet 'blue-{tag}' ({first.resolve()}), which is running") in err
    assert "instance server: UDP " in err and ":3544 in netns " in err
    assert "nothing was started" in err and len(err.strip().splitlines()) == 1
    assert fleet_processes(host.paths(f"green-{tag}")) == {}
    assert {n: r["pid"] for n, r in host.status(first).items()} == pids

    # only what runs counts: once blue's client1 is down, green may run its own client1
    host.run(first, "down", "client1")
    host.run(second, "up", "client1")
    host.run(second, "wait", "client1", "--timeout", "60")
    proc = host.run(first, "up", "client1", expect=1)
    assert (f"instance client1: interface 'teredo' in netns {client_ns} is held by instance "
            f"client1 of fleet 'green-{tag}'") in proc.stderr
    listed = {r["name"]: (r["state"], r["running"], r["total"])
              for r in json.loads(host.run(None, "ls", "--json").stdout)}
    assert listed == {f"blue-{tag}": ("running", 3, 4), f"green-{tag}": ("running", 1, 4)}
