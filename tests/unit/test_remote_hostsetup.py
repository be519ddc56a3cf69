"""hostsetup.py, the host side of `hosts bootstrap` and of upgrades, on this machine's files
(no package is installed and nothing outside tmp_path is written)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from miredoctl.remote import hostsetup


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    rc = hostsetup.main(list(argv))
    return rc, json.loads(capsys.readouterr().out)


def test_folders_once_then_nothing_to_do(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--root", str(tmp_path / "r"), "--python", str(tmp_path / "r/venv/bin/python"),
            "--state-dir", str(tmp_path / "st"))
    rc, answer = run(capsys, *args)
    assert rc == 0 and answer["changed"] and answer["error"] is None, answer
    assert (tmp_path / "r" / "fleets").is_dir() and (tmp_path / "st").is_dir()
    rc, answer = run(capsys, *args)
    assert rc == 0 and not answer["changed"] and answer["steps"] == [], answer


def test_a_python_outside_the_root_is_refused_not_touched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = tmp_path / "elsewhere" / "python"
    rc, answer = run(capsys, "--root", str(tmp_path / "r"), "--python", str(python),
                     "--state-dir", str(tmp_path / "st"), "--identity", "9.9+abc")
    assert rc == 1 and "not miredoctl's own venv" in str(answer["error"]), answer
    assert not python.parent.exists()


def test_a_wheel_tar_with_anything_but_plain_wheels_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "w.tar"
    (tmp_path / "src.whl").write_bytes(b"")
    with tarfile.open(bad, "w") as tar:
        tar.add(tmp_path / "src.whl", "../evil.whl")
    root = tmp_path / "r"
    python = root / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")  # a venv whose teredo-fleet does not answer
    python.chmod(0o755)
    rc, answer = run(capsys, "--root", str(root), "--python", str(python), "--state-dir",
                     str(tmp_path / "st"), "--identity", "9.9+abc", "--wheels", str(bad))
    assert rc == 1 and "unexpected member '../evil.whl'" in str(answer["error"]), answer
    assert not (tmp_path / "evil.whl").exists() and not (tmp_path.parent / "evil.whl").exists()
