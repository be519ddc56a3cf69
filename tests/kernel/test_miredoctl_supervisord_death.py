"""miredoctl when commands race (issue 10, item 4): they wait for the fleet lock in turn.

Against a real supervisord, real engines and the lab, as test_miredoctl_fleet.py brings them
up. Engines are only ever checked through /proc, never signalled by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.test_miredoctl_fleet import Ctl, ctl_factory, lab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel

NAMES = ("client1", "client2", "relay", "server")


def _actions(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    return [(r["name"], r["action"]) for r in json.loads(proc.stdout)["results"]]


def _lock_held_by(ctl: Ctl, pid: int) -> bool:
    """Whether `pid` holds the flock on the fleet's lock file (read from /proc/locks, so the
    test never takes the lock itself)."""
    try:
        st = (ctl.state / "lock").stat()
    except FileNotFoundError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in line and len(fields) > 5 and fields[1] == "FLOCK" \
                and fields[5] == key and int(fields[4]) == pid:
            return True
    return False


def _spawn(ctl: Ctl, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MIREDOCTL_FLEET": str(ctl.fleet), "MIREDOCTL_STATE": str(ctl.state)}
    env.pop("MIREDOCTL_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "miredoctl.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_down_during_a_starting_up_waits_and_stops_what_it_started(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    up = _spawn(ctl, "up")
    try:
        deadline = time.monotonic() + 60
        while not _lock_held_by(ctl, up.pid):
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "up never took the fleet lock"
            time.sleep(0.02)
        down = ctl.run("down", "--json")
        out, err = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, (out, err)
    assert f"waiting for the fleet lock held by pid {up.pid} (miredoctl up)" in down.stderr
    got = dict(_actions(down))
    assert got == {"client1": "stopped", "client2": "stopped", "relay": "stopped",
                   "server": "stopped", "supervisord": "stopped"}
    proc = ctl.run("status", "--json", expect=4)
    assert {r["state"] for r in json.loads(proc.stdout)["instances"]} == {"STOPPED"}


def test_twenty_concurrent_reloads_all_wait_their_turn(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    pids = ctl.pids()
    hups = {n: ctl.log(n).count("SIGHUP") for n in NAMES}
    procs = [_spawn(ctl, "reload", "--all", "--json") for _ in range(20)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        outcomes.append((proc.returncode, out, err))
    assert [code for code, _out, _err in outcomes] == [0] * 20, outcomes
    for _code, out, err in outcomes:
        assert {r["action"] for r in json.loads(out)["results"]} == {"signalled"}, out
        assert "Traceback" not in err and "internal error" not in err
    waited = sum("waiting for the fleet lock held by pid" in err for _c, _o, err in outcomes)
    assert waited >= 1  # they did meet: the lock made them queue, not fail
    ctl.wait(lambda: all(ctl.log(n).count("SIGHUP") == hups[n] + 20 for n in NAMES),
             "20 SIGHUPs in every engine's log", 30)
    assert ctl.pids() == pids  # a HUP is not a restart
    ctl.run("wait", "--timeout", "60")
