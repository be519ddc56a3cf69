"""miredoctl under faults (issue 10), against a real supervisord, real engines and the lab.

Faults are injected from the test side only: the CLI runs as a child whose SupervisordClient
is wrapped before `main()` (see `_run_injected`), so the production code has no test hooks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from miredoctl.state import StatePaths, fleet_processes
from miredoctl.status import query_engine
from tests.kernel.test_miredoctl_fleet import Ctl, ctl_factory, lab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel

# Wraps the real re-read: first a broken option is appended to a program file this `up` just
# wrote (supervisord, not a stand-in, then answers CANT_REREAD), then supervisord re-reads.
BREAK_REREAD = """
import sys
from pathlib import Path
import miredoctl.supervisord as s
real = s.SupervisordClient.reread
def reread(self):
    with (self.paths.programs / "relay.conf").open("a") as fh:
        fh.write("startsecs=soon\\n")
    return real(self)
s.SupervisordClient.reread = reread
"""
# A process setting supervisord's parser refuses, written by miredoctl itself.
BREAK_PROGRAM = """
import miredoctl.render as r
r.PROGRAM_SETTINGS["startsecs"] = "soon"
"""
# The relay's program is `false`: it exits at once, every start.
EXIT_AT_ONCE = """
import miredoctl.render as r
real = r.engine_command
r.engine_command = lambda inst, paths: (["/bin/false"] if inst.name == "relay"
                                        else real(inst, paths))
"""
MAIN = "\nimport sys\nfrom miredoctl.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _run_injected(ctl: Ctl, inject: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIREDOCTL_FLEET": str(ctl.fleet), "MIREDOCTL_STATE": str(ctl.state)}
    env.pop("MIREDOCTL_DEBUG", None)
    return subprocess.run([sys.executable, "-c", inject + MAIN, *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _state_files(ctl: Ctl) -> dict[Path, bytes]:
    paths = [ctl.state / "supervisord.conf", *sorted((ctl.state / "configs").iterdir()),
             *sorted((ctl.state / "programs").iterdir())]
    return {p: p.read_bytes() for p in paths}


def _actions(ctl: Ctl) -> dict[str, Any]:
    return {r["name"]: r["action"] for r in ctl.json("up")["results"]}


@pytest.mark.parametrize("inject", [BREAK_REREAD, BREAK_PROGRAM], ids=["reread", "parser"])
def test_failed_up_restores_every_file_and_the_next_up_touches_nothing(
        ctl_factory, inject: str) -> None:  # noqa: F811
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    pids = ctl.pids()
    files = _state_files(ctl)
    relay_yaml = (ctl.fleet / "relay.yaml").read_text()
    (ctl.fleet / "relay.yaml").write_text(relay_yaml + "mtu: 1400\n")

    proc = _run_injected(ctl, inject, "up")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    expected = ("supervisord cannot read its configuration: CANT_REREAD"
                if inject is BREAK_REREAD else "supervisord's parser rejects the new "
                                               "configuration")
    assert lines[0].startswith(f"miredoctl: {expected}"), lines
    assert lines[0].endswith("every file this `up` wrote was restored"), lines
    assert _state_files(ctl) == files
    assert ctl.pids() == pids

    # the operator reverts the change: nothing restarts, nothing is rewritten
    (ctl.fleet / "relay.yaml").write_text(relay_yaml)
    assert set(_actions(ctl).values()) == {"unchanged"}
    assert ctl.pids() == pids
    assert _state_files(ctl) == files
    # and the change itself still applies cleanly
    (ctl.fleet / "relay.yaml").write_text(relay_yaml + "mtu: 1400\n")
    got = _actions(ctl)
    assert got == {"client1": "unchanged", "client2": "unchanged", "relay": "restarted",
                   "server": "unchanged"}


def _worker_of(ctl: Ctl, name: str, pid: int) -> int:
    """The engine's worker: the status answer names it (contract §4), else the only child."""
    answer = query_engine(ctl.state / "run" / f"{name}.sock")
    if isinstance(answer.get("worker_pid"), int):
        return answer["worker_pid"]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_a_frozen_engine_is_unresponsive_and_status_exits_3(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    pid = ctl.status("client1")["client1"]["pid"]
    worker = _worker_of(ctl, "client1", pid)
    assert worker != pid and Path(f"/proc/{worker}/status").read_text().count(f"PPid:\t{pid}")
    os.kill(worker, signal.SIGSTOP)
    try:
        row = ctl.wait(lambda: (lambda r: r if r["state"] == "UNRESPONSIVE" else None)(
            ctl.status("client1")["client1"]), "client1 UNRESPONSIVE", 8)
        assert row["process_state"] == "RUNNING" and row["pid"] == pid
        assert row["tunnel_state"] != "qualified"
        proc = ctl.run("status", expect=3)
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("client1 "))
        assert "UNRESPONSIVE" in line and "qualified" not in line
        others = ctl.status()
        assert all(others[n]["state"] == "RUNNING" for n in ("client2", "relay", "server"))
        ctl.run("wait", "client1", "--timeout", "1", expect=3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
    ctl.run("wait", "--timeout", "60")
    ctl.run("status")


# -- a read-only or full state folder (issue 10, item 6) -------------------------------------
def _run_read_only(ctl: Ctl, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a private mount namespace where the state folder is a read-only bind mount
    of itself: the CLI's writes fail with EROFS, the running fleet (supervisord, engines) is
    left as it was, and the mount vanishes with the command, whatever happens."""
    env = {**os.environ, "MIREDOCTL_FLEET": str(ctl.fleet), "MIREDOCTL_STATE": str(ctl.state)}
    env.pop("MIREDOCTL_DEBUG", None)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount --bind -o ro "$0" "$0" && exec "$@"', str(ctl.state),
                           sys.executable, "-m", "miredoctl.cli", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def _one_error_line(proc: subprocess.CompletedProcess, path: Path, reason: str) -> str:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"miredoctl: {path}: {reason}"), lines
    return lines[0]


def _hups(ctl: Ctl, name: str) -> int:
    return ctl.log(name).count("SIGHUP")


def _state_folder_faults(ctl: Ctl, run, reason: str) -> None:
    """What an operator does on a broken state folder: `up`, `reload`, `restart` with a changed
    inventory fail in one `path: reason` line (exit 1) and change nothing; `down NAME` still
    stops the instance."""
    pids = ctl.pids()
    files = _state_files(ctl)
    relay_hups = _hups(ctl, "relay")
    (ctl.fleet / "relay.yaml").write_text((ctl.fleet / "relay.yaml").read_text() + "mtu: 1400\n")

    proc = run("up")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    line = _one_error_line(proc, ctl.state / "run", reason)
    assert line.endswith("nothing was stopped or started"), line

    proc = run("reload", "relay")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    out = proc.stdout.strip()
    assert out.startswith(f"relay  failed: {ctl.state / 'configs' / 'relay.conf'}: {reason}")
    assert out.endswith("; not signalled") and len(out.splitlines()) == 1, out

    proc = run("restart", "relay")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    _one_error_line(proc, ctl.state / "run", reason)

    assert ctl.pids() == pids and _state_files(ctl) == files
    assert _hups(ctl, "relay") == relay_hups

    proc = run("down", "client2")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.split() == ["client2", "stopped"]
    row = ctl.status("client2")["client2"]
    assert row["state"] == "STOPPED" and not Path(f"/proc/{pids['client2']}").exists()
    assert {n: p for n, p in ctl.pids().items() if n != "client2"} == \
        {n: p for n, p in pids.items() if n != "client2"}


def test_a_read_only_state_folder_gives_one_line_errors_and_down_still_works(
        ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    _state_folder_faults(ctl, lambda *a: _run_read_only(ctl, *a), "Read-only file system")
    proc = _run_read_only(ctl, "status")  # reading needs no write access
    assert proc.returncode == 3, proc.stderr
    # writable again: the change applies, the stopped instance starts
    got = _actions(ctl)
    assert got == {"client1": "unchanged", "client2": "started", "relay": "restarted",
                   "server": "unchanged"}


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the filler file, to remove later."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1):  # big blocks, then the last bytes of a partial page
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def test_a_full_state_folder_gives_one_line_errors_and_down_still_stops(
        ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    ctl.state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "miredoctl-full",
                    str(ctl.state)], check=True)
    try:
        ctl.run("up")
        ctl.run("wait", "--timeout", "60")
        filler = _fill(ctl.state)
        _state_folder_faults(ctl, lambda *a: ctl.run(*a, expect=None),
                             "No space left on device")
        filler.unlink()
        got = _actions(ctl)
        assert got == {"client1": "unchanged", "client2": "started", "relay": "restarted",
                       "server": "unchanged"}
        ctl.run("wait", "--timeout", "60")
    finally:
        ctl.run("down", expect=None)
        pidfile = ctl.state / "supervisord.pid"
        with contextlib.suppress(OSError, ValueError):  # down failed: the one this test started
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        if subprocess.run(["umount", str(ctl.state)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(ctl.state)], check=True)


def test_a_failed_first_up_leaves_nothing_running(ctl_factory) -> None:  # noqa: F811
    """Nothing ran before: a failed `up` must not leave the supervisord it started (nor the
    engines that did start) behind, or the fleet would run half-up with nobody having asked."""
    ctl = ctl_factory()
    # the relay's program exits at once, every time: supervisord gives it up (FATAL), however
    # slow the machine (an engine that fails by itself may outlive startsecs under load)
    proc = _run_injected(ctl, EXIT_AT_ONCE, "up", "--json")
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    got: dict[str, list[str]] = {}
    for r in json.loads(proc.stdout)["results"]:
        got.setdefault(r["name"], []).append(r["action"])
    assert "failed" in got["relay"], got
    assert all(got[n][-1] == "rolled back" for n in ("client1", "client2", "server", "relay")), got
    assert got["supervisord"] == ["stopped"], got
    assert not (ctl.state / "supervisor.sock").exists()
    assert fleet_processes(StatePaths(ctl.state)) == {}
    status = ctl.json("status", expect=None)
    assert status["supervisord"]["running"] is False, status
