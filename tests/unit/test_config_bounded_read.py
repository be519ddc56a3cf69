"""Issue 10, item 9: a config path that is not a small regular file is one line, never a hang.

`teredo-engine --check -c` on a FIFO blocked in open(), and on /dev/zero it read until memory
ran out. engine/config/source.py reads regular files of at most 1 MiB, without blocking.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config, peek_role_and_status_socket
from engine.config.source import MAX_CONFIG_BYTES, NotAConfigFile, read_config_bytes

CONF = b"RelayType client\nServerAddress 203.0.113.10\n"


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_bytes(CONF)
    assert read_config_bytes(str(path)) == CONF
    path.write_bytes(b"#" * MAX_CONFIG_BYTES)
    assert len(read_config_bytes(str(path))) == MAX_CONFIG_BYTES


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: os.mkfifo(p), "is a FIFO, not a regular file"),
    (lambda p: p.mkdir(), "is a directory, not a regular file"),
    (lambda p: p.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1)), "is larger than 1024 KiB"),
])
def test_what_is_not_a_small_regular_file_is_refused(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "c.conf"
    make(path)
    with pytest.raises(NotAConfigFile, match=message):
        read_config_bytes(str(path))


def test_devices_are_refused_without_reading() -> None:
    for dev in ("/dev/zero", "/dev/urandom", "/dev/null"):
        with pytest.raises(NotAConfigFile, match="is a character device, not a regular file"):
            read_config_bytes(dev)


def test_missing_files_still_raise_what_open_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_config_bytes(str(tmp_path / "nope.conf"))


def _check(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "--check", "-c", path],
                          capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge", "directory"])
def test_check_answers_in_one_line(tmp_path: Path, kind: str) -> None:
    """The issue's commands: each answers at once (timeout 10 s) with one `path: message`."""
    path = str(tmp_path / "c.conf")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path = "/dev/zero"
    elif kind == "huge":
        Path(path).write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    else:
        os.mkdir(path)
    proc = _check(path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: cannot read the config file: is "), \
        lines


def test_load_config_and_peek_use_the_bounded_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "c.conf"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as exc:
        load_config(str(fifo))
    assert exc.value.problems == [f"{fifo}: cannot read the config file: is a FIFO, not a "
                                  "regular file"]
    assert peek_role_and_status_socket(str(fifo)) == ("client", None)
    assert peek_role_and_status_socket("/dev/zero") == ("client", None)
