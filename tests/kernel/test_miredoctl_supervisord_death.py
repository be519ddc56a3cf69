"""miredoctl when the fleet's supervisord dies, and when commands race (issue 10, items 3, 4).

Against a real supervisord, real engines and the lab, as test_miredoctl_fleet.py brings them
up. The supervisord killed here is the one this test's `up` started (by its pid file); engines
are only ever checked through /proc, never signalled by the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.test_miredoctl_fleet import Ctl, ctl_factory, lab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel

NAMES = ("client1", "client2", "relay", "server")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_supervisord(ctl: Ctl) -> dict[str, int]:
    """`up`, `wait`, then kill -9 the fleet's supervisord; the engines' pids, still running."""
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    pids = ctl.pids()
    sup = int((ctl.state / "supervisord.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    ctl.wait(lambda: not _alive(sup), "supervisord gone", 10)
    assert all(_alive(pid) for pid in pids.values()), pids  # the engines outlive it
    return pids


def _actions(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    return [(r["name"], r["action"]) for r in json.loads(proc.stdout)["results"]]


def test_status_shows_engines_without_their_supervisord_as_orphaned(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    pids = _kill_supervisord(ctl)
    proc = ctl.run("status", "--json", expect=4)  # supervisord unreachable: still exit 4
    rows = {r["name"]: r for r in json.loads(proc.stdout)["instances"]}
    assert {n: (r["state"], r["pid"]) for n, r in rows.items()} == \
        {n: ("ORPHANED", pids[n]) for n in NAMES}
    # the engines still answer: the tunnel columns come from them, not from supervisord
    assert rows["client1"]["tunnel_state"] == "qualified" and rows["client1"]["address"]
    assert "ORPHANED: client1, client2, relay, server" in proc.stderr
    table = ctl.run("status", expect=4).stdout.splitlines()
    for name in NAMES:
        line = next(ln for ln in table if ln.startswith(name + " "))
        assert "ORPHANED" in line and str(pids[name]) in line
    shown = ctl.run("show", "relay", expect=4).stdout
    assert f"pid {pids['relay']} runs without supervisord" in shown


def test_down_stops_engines_whose_supervisord_died(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    pids = _kill_supervisord(ctl)
    got = _actions(ctl.run("down", "client2", "--json"))
    assert got == [("client2", "stopped")]
    assert not _alive(pids["client2"])
    assert all(_alive(pids[n]) for n in ("client1", "relay", "server"))  # only the one named
    assert ctl.status("client2")["client2"]["state"] == "STOPPED"
    got = dict(_actions(ctl.run("down", "--json")))
    assert got == {"client1": "stopped", "client2": "not running", "relay": "stopped",
                   "server": "stopped"}
    assert not any(_alive(pid) for pid in pids.values())
    # the fixture's teardown also checks that nothing is left in the lab's namespaces


def test_up_name_after_supervisord_died_restarts_only_that_instance(ctl_factory) -> None:  # noqa: F811
    ctl = ctl_factory()
    pids = _kill_supervisord(ctl)
    got = _actions(ctl.run("up", "client1", "--json"))
    assert ("client1", "stale engine stopped") in got and ("client1", "started") in got
    assert sorted(n for n, a in got if a == "orphaned") == ["client2", "relay", "server"]
    # the rest of the fleet was not stopped: the same processes still forward
    assert all(_alive(pids[n]) for n in ("client2", "relay", "server"))
    rows = ctl.status()
    assert rows["client1"]["state"] == "RUNNING" and rows["client1"]["pid"] != pids["client1"]
    assert {n: (rows[n]["state"], rows[n]["pid"]) for n in ("client2", "relay", "server")} == \
        {n: ("ORPHANED", pids[n]) for n in ("client2", "relay", "server")}
    ctl.run("status", expect=3)
    ctl.run("wait", "client1", "--timeout", "60")  # its server still runs: it qualifies
    # a whole-fleet `up` brings the orphans back under supervisord; client1 is left alone
    client1 = ctl.pids()["client1"]
    got = dict(_actions(ctl.run("up", "--json")))
    assert got == {"client1": "unchanged", "client2": "started", "relay": "started",
                   "server": "started"}
    ctl.run("wait", "--timeout", "60")
    after = ctl.pids()
    assert after["client1"] == client1
    assert not {after[n] for n in ("client2", "relay", "server")} & set(pids.values())
    assert not any(_alive(pids[n]) for n in NAMES)


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
