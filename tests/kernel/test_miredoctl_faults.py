"""miredoctl under faults (issue 10), against a real supervisord, real engines and the lab.

Faults are injected from the test side only: the CLI runs as a child whose SupervisordClient
is wrapped before `main()` (see `_run_injected`), so the production code has no test hooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
