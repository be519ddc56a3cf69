"""`logs -f` in a fleet across hosts follows the controller's own instances (no `host:`) too,
through the same streaming agent, here; no SSH is involved when only they are selected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from miredoctl.listeners.timedlog import format_line
from tests.unit.test_remote_inventory import fleet


def test_logs_follow_streams_local_instances(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    root = fleet(tmp_path / "f", {"r0": "role: relay\n", "r1": "role: relay\nhost: fra1\n"})
    state = tmp_path / "st"
    timed = state / "logs" / "timed"
    timed.mkdir(parents=True)
    log = timed / "r0.log"
    log.write_text("".join(format_line(1_000_000 + i, f"old line {i}") for i in range(5)))
    proc = subprocess.Popen([sys.executable, "-m", "miredoctl.cli", "--fleet", str(root),
                             "--state-dir", str(state), "logs", "-f", "-n", "2", "--json",
                             "r0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, MIREDOCTL_DEBUG="1"))
    got: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            got.append(json.loads(text))
    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert [(ln["host"], ln["text"]) for ln in got] == [
            ("(local)", "old line 3"), ("(local)", "old line 4")], (got, proc.poll())
        with log.open("a") as f:
            f.write(format_line(time.time(), "a new line"))
        while len(got) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert got[2:] == [{"host": "(local)", "name": "r0", "time": got[2]["time"],
                            "text": "a new line"}], got
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
