"""Everyday polish of the command line: --version, a reader that stops early, and
`validate --json` answering with the problems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import miredoctl
from miredoctl import cli

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "MIREDOCTL_FLEET": str(ROOT / "instances"),
           "MIREDOCTL_STATE": str(tmp_path / "state")}
    env.pop("MIREDOCTL_DEBUG", None)
    return env


def test_version(capsys) -> None:
    try:
        cli.main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out == f"miredoctl {miredoctl.__version__}\n"


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """stdout is a pipe whose reader is already gone: the first write (or the last flush)
    fails with EPIPE. miredoctl must exit 0 and say nothing, as `cat` does."""
    for args in (["config"], ["config", "--origin", "--json"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args],
                                  stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  env=_env(tmp_path), timeout=60, cwd=ROOT)
        finally:
            os.close(write_end)
        assert (proc.returncode, proc.stderr) == (0, ""), args


def test_validate_json_prints_the_problems(tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "relay.yaml").write_text("role: relay\nmtu: many\n")
    code = cli.main(["--fleet", str(fleet), "--state-dir", str(tmp_path / "state"),
                     "validate", "--json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["problems"] and all(set(p) == {"file", "line", "message"}
                                    for p in data["problems"])
    assert any(p["file"].endswith("relay.yaml") and p["line"] == 2 and "mtu" in p["message"]
               for p in data["problems"])
    assert err.strip().endswith("problem(s); nothing was changed")  # stderr as without --json
    code = cli.main(["--fleet", str(fleet), "--state-dir", str(tmp_path / "state"),
                     "validate"])
    assert code == 1 and capsys.readouterr().out == ""  # no JSON unless asked


def test_a_broken_pipe_to_supervisord_is_still_a_failed_connection(tmp_path: Path,
                                                                    monkeypatch, capsys) -> None:
    """Only a closed stdout is quiet: EPIPE on supervisord's socket stays exit 4."""
    def broken(args, ctx):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setitem(cli.COMMANDS, "status", broken)
    code = cli.main(["--fleet", str(ROOT / "instances"), "--state-dir", str(tmp_path / "s"),
                     "status"])
    assert code == 4
    assert "supervisord connection failed" in capsys.readouterr().err
