"""The agent's envelope and the controller's bundle, without SSH or ansible."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from miredoctl.remote import agent, orchestrate, schema


def git_fleet(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "r1.yaml").write_text("role: relay\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                    "-qm", "fleet"], cwd=root, check=True)
    return root


def run_agent(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              bundle: orchestrate.Bundle, *args: str) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(bundle.b64))
    rc = agent.main(list(args))
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bundle_is_head_and_says_dirty(tmp_path: Path) -> None:
    root = git_fleet(tmp_path)
    b = orchestrate.make_bundle(root)
    assert not b.dirty and len(b.commit) == 12
    (root / "r1.yaml").write_text("role: relay\nmtu: 1400\n")
    b2 = orchestrate.make_bundle(root)
    assert b2.dirty and b2.commit == b.commit and b2.data == b.data  # HEAD, not the edit


def test_agent_refuses_another_teredo_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    b = orchestrate.make_bundle(git_fleet(tmp_path))
    rc, env = run_agent(monkeypatch, capsys, b, "--host", "h1", "--root", str(tmp_path / "a"),
                        "--state-dir", str(tmp_path / "s"), "--commit", b.commit,
                        "--expect", "0.0.1+0000", "--", "status")
    assert rc == schema.EXIT_VERSION == env["rc"]
    assert env["schema"] == schema.SCHEMA and "controller has 0.0.1+0000" in env["stderr"]
    assert not (tmp_path / "a").exists()  # refused before unpacking anything


def test_agent_unpacks_once_and_runs_its_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    b = orchestrate.make_bundle(git_fleet(tmp_path))
    args = ("--host", "", "--root", str(tmp_path / "a"), "--state-dir", str(tmp_path / "s"),
            "--commit", b.commit, "--expect", schema.identity(), "--", "status")
    _rc, env = run_agent(monkeypatch, capsys, b, *args)
    assert (tmp_path / "a" / "fleets" / b.commit / "r1.yaml").is_file()
    assert env["commit"] == b.commit and env["result"]["instances"][0]["name"] == "r1", env
    empty = orchestrate.Bundle(b.commit, False, b"")  # already there: nothing needs sending
    _rc2, env2 = run_agent(monkeypatch, capsys, empty, *args)
    assert env2["result"]["instances"][0]["name"] == "r1"


def test_bad_bundle_is_an_answer_not_a_traceback(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    junk = orchestrate.Bundle("abc", False, b"not a tarball")
    rc, env = run_agent(monkeypatch, capsys, junk, "--host", "h", "--root", str(tmp_path),
                        "--state-dir", str(tmp_path / "s"), "--commit", "abc", "--", "status")
    assert rc == 1 and "cannot unpack the fleet" in env["stderr"]


def test_serial_and_max_fail_parsing() -> None:
    assert orchestrate.parse_serial(None) == "1" and orchestrate.parse_serial("50%") == "50%"
    assert orchestrate.parse_percent("25%") == 25 and orchestrate.parse_percent(None) == 0
    for bad in ("0", "-1", "150%", "x"):
        with pytest.raises(Exception, match="--serial"):
            orchestrate.parse_serial(bad)


def test_ssh_errors_are_one_line() -> None:
    msg = ("Failed to connect to the host via ssh: @@@@@@@@\n"
           "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
           "Host key verification failed.\n")
    assert "CHANGED" in orchestrate._ssh_error(msg) and "\n" not in orchestrate._ssh_error(msg)
    assert orchestrate._ssh_error("ssh: connect to host 192.0.2.2 port 22: Connection "
                                  "refused") .endswith("Connection refused")
    assert base64  # used by the agent's stdin
