"""A pid file is created before its number is written: readers must take "empty" for "not yet"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from miredoctl.procs import read_pid
from miredoctl.state import StatePaths, fleet_processes


def test_read_pid(tmp_path: Path) -> None:
    f = tmp_path / "x.pid"
    assert read_pid(f) is None  # missing
    f.write_text("")
    assert read_pid(f) is None  # created, not written yet
    f.write_text("not a pid\n")
    assert read_pid(f) is None
    f.write_text("4242\n")
    assert read_pid(f) == 4242


def test_an_engine_whose_pid_file_is_still_empty_is_found(tmp_path: Path) -> None:
    # seen under load: `wait` ended in an internal error (IndexError) on such a file
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    conf, pidfile = paths.config("r1"), paths.pidfile("r1")
    conf.write_text("RelayType cone\n")
    pidfile.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "-c", str(conf), "-p", str(pidfile)], start_new_session=True)
    try:
        # until the child has exec'd, /proc shows the test's own command line
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        while str(conf).encode() not in cmdline.read_bytes():
            time.sleep(0.01)
        found = fleet_processes(paths)
        assert set(found) == {"r1"}
        assert found["r1"].pid == proc.pid  # the group leader stands in for the pid file
    finally:
        proc.kill()
        proc.wait()
