"""Issue 10, item 4 without root: a command that finds the fleet lock taken waits its turn,
says whom it waits for, gives up after its timeout in one line, and needs no write access.

tests/kernel/test_miredoctl_supervisord_death.py races `down` against `up` and runs twenty
`reload`s at once against a real fleet.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miredoctl.errors import MiredoctlError
from miredoctl.state import StatePaths, fleet_lock, lock_holder


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    p.ensure()
    return p


def _hold_lock(paths: StatePaths, seconds: float) -> subprocess.Popen:
    code = ("import sys, time; from pathlib import Path; "
            "from miredoctl.state import StatePaths, fleet_lock\n"
            "with fleet_lock(StatePaths(Path(sys.argv[1])), 'up'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
            "print('released', flush=True)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(paths.root), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_command_waits_for_the_lock_and_says_whom_it_waits_for(paths: StatePaths) -> None:
    holder = _hold_lock(paths, 1.0)
    said: list[str] = []
    try:
        assert lock_holder(paths) == (holder.pid, "miredoctl up")
        with fleet_lock(paths, "down", notify=said.append):
            assert holder.stdout.readline() == "released\n"  # we got it after it let go
    finally:
        holder.wait()
    assert said == [f"waiting for the fleet lock held by pid {holder.pid} (miredoctl up)..."]


def test_the_wait_for_the_lock_ends_with_a_one_line_error(paths: StatePaths) -> None:
    holder = _hold_lock(paths, 30)
    try:
        with pytest.raises(MiredoctlError) as err, fleet_lock(paths, "reload", timeout=0.3,
                                                              notify=lambda _m: None):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert str(err.value) == (f"{paths.lock}: the fleet lock is still held by pid {holder.pid} "
                              "(miredoctl up) after 0.3 s; try again when it has finished "
                              "(MIREDOCTL_LOCK_TIMEOUT sets the wait)")
    assert err.value.code == 1


def test_the_lock_nests_within_one_process(paths: StatePaths) -> None:
    with fleet_lock(paths, "up"), fleet_lock(paths, "up", timeout=0):
        fd = os.open(paths.lock, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held after the inner
        finally:
            os.close(fd)
    with fleet_lock(paths, "down", timeout=0):  # and released after the outer
        pass
