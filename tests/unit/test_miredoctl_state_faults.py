"""Issue 10, item 6 without root: a state folder that refuses writes is a one-line
`path: reason` error (exit 1), never an internal error.

tests/kernel/test_miredoctl_faults.py runs `up`, `reload`, `restart` and `down NAME` against a
real fleet on a read-only bind mount and on a full tmpfs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from miredoctl import ops, state
from miredoctl.errors import StateFolderError
from miredoctl.state import StatePaths, fleet_lock


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    p.ensure()
    return p


def test_ensure_leaves_a_folder_that_is_already_right_alone(paths: StatePaths,
                                                           monkeypatch) -> None:
    """A chmod is refused on a read-only mount even when it changes nothing: `down` must get
    through `ensure` on such a folder."""
    def refuse(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(state.os, "chmod", refuse)
    paths.ensure()
    fresh = StatePaths(paths.root.parent / "fresh")
    with pytest.raises(StateFolderError) as err:
        fresh.ensure()
    assert str(err.value) == (f"{fresh.root}: Read-only file system (the state folder is "
                              "read-only)")


def test_state_folder_errors_are_one_line_with_the_path(paths: StatePaths,
                                                        monkeypatch) -> None:
    err = state.state_error(OSError(errno.ENOSPC, "No space left on device"), paths.config("a"))
    assert isinstance(err, StateFolderError) and err.code == 1
    assert str(err) == (f"{paths.config('a')}: No space left on device (the state folder's file "
                        "system is full)")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/.a.conf.xyz")

    monkeypatch.setattr(state.tempfile, "mkstemp", full)
    with pytest.raises(OSError) as exc:
        state.write_atomic(paths.config("a"), "x\n")
    assert exc.value.filename == str(paths.config("a"))  # the file meant, not the temp file
    with pytest.raises(StateFolderError) as probe:
        ops.check_writable(paths)
    assert str(probe.value).startswith(f"{paths.run}: No space left on device")
    assert str(probe.value).endswith("nothing was stopped or started")


def test_the_lock_works_without_write_access(paths: StatePaths, monkeypatch) -> None:
    """A read-only state folder cannot open the lock file for writing; flock does not need it.
    Without any lock file the folder itself is the lock."""
    with fleet_lock(paths):  # the lock file exists, as after any earlier command
        pass
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(state.os, "open", read_only)
    with fleet_lock(paths):
        pass
    paths.lock.unlink()
    with fleet_lock(paths):
        pass




def test_a_run_folder_too_long_for_a_unix_socket_is_refused_before_up_writes(
        tmp_path: Path) -> None:
    """supervisord exits with "AF_UNIX path too long" on a socket path over 107 bytes, and an
    engine cannot bind its status socket: `up` says so first and writes no config."""
    import subprocess
    import sys

    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "r1.yaml").write_text('role: relay\nbind_port: 3545\nprefix: "2001:0::"\n')
    deep = tmp_path / ("d" * max(1, 108 - len(os.fsencode(tmp_path)) - len("/supervisor.sock")))
    long_paths = StatePaths(deep)
    assert long_paths.sockets_too_long(["r1"]) is not None
    assert StatePaths(Path("/run/miredoctl/fleet")).sockets_too_long(["r" * 32]) is None
    proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet),
                           "--state-dir", str(deep), "up"], capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert proc.stderr == (f"miredoctl: {deep}/supervisor.sock: socket path of "
                           f"{len(os.fsencode(deep / 'supervisor.sock'))} bytes, more than the "
                           "107 a UNIX socket can have; choose a shorter run folder (--run-dir "
                           "or --state-dir)\n")
    assert not list(deep.glob("configs/*")) and not list(deep.glob("programs/*"))


def test_an_instance_name_that_makes_its_status_socket_too_long_is_named(tmp_path: Path) -> None:
    base = Path("/run/miredoctl")  # lengths only: nothing is created
    root = base / ("e" * (107 - len(os.fsencode(base)) - len("/run/.sock") - 21))
    paths = StatePaths(root)
    assert paths.sockets_too_long(["short"]) is None
    why = paths.sockets_too_long(["short", "n" * 32])
    assert why is not None and why.startswith(f"{paths.status_socket('n' * 32)}: socket path of ")
