"""The run path's early refusals: one line on stderr, exit 1, nothing created."""

from __future__ import annotations

import os
import sys

import pytest

from engine.config import load_config
from engine.options import RunOptions
from engine.runtime import daemon


def _run_in_child(config, opts, uid: int | None = None) -> tuple[int, str]:
    """`daemon.run` in a forked child (optionally after setuid) with stderr captured."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(r)
            os.dup2(w, 2)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (pytest capture)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = daemon.run(config, opts)
        finally:
            os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status), out.decode()


@pytest.fixture
def relay_config(tmp_path):
    p = tmp_path / "r.conf"
    p.write_text("RelayType cone\nInterfaceName h6never\n")
    return load_config(str(p))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_not_root_is_one_line_exit_1(tmp_path, relay_config):
    opts = RunOptions(config_path=relay_config.path, foreground=True,
                      pidfile=str(tmp_path / "x.pid"), status_socket=str(tmp_path / "x.sock"))
    code, err = _run_in_child(relay_config, opts, uid=65534)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "root privileges are needed (running as uid 65534)" in err
    assert not (tmp_path / "x.pid").exists() and not (tmp_path / "x.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_unknown_user_and_bad_chroot(tmp_path, relay_config):
    opts = RunOptions(config_path=relay_config.path, foreground=True,
                      pidfile=str(tmp_path / "x.pid"), user="no-such-user-h6")
    code, err = _run_in_child(relay_config, opts)
    assert code == 1 and "unknown user 'no-such-user-h6' (-u)" in err
    opts = RunOptions(config_path=relay_config.path, foreground=True,
                      pidfile=str(tmp_path / "x.pid"), chrootdir=str(tmp_path / "missing"))
    code, err = _run_in_child(relay_config, opts)
    assert code == 1 and "does not exist or is not a directory (-t)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_config_warnings_are_logged_at_start_up(tmp_path):
    """A miredo.conf with superfluous directives runs; the daemon logs each warning (stderr in
    the foreground, and syslog) before anything else."""
    p = tmp_path / "r.conf"
    p.write_text("RelayType cone\nServerAddress 203.0.113.10\nInterfaceName h6never\n")
    config = load_config(str(p))
    opts = RunOptions(config_path=config.path, foreground=True,
                      pidfile=str(tmp_path / "x.pid"), user="no-such-user-h6")
    code, err = _run_in_child(config, opts)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2
    assert f"{p}:2: warning: superfluous directive ServerAddress" in lines[0]
    assert "unknown user 'no-such-user-h6' (-u)" in lines[1]
