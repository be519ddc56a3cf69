"""Pid file: miredo's format and locking, and the message a second instance prints."""

from __future__ import annotations

import os

import pytest

from engine.runtime.pidfile import PidFile, PidFileError, read_pid


def _in_child(fn) -> tuple[int, str]:
    """Run `fn` in a forked process (POSIX locks are per process); return (code, message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code, msg = 0, ""
        try:
            fn()
        except PidFileError as e:
            code, msg = 1, str(e)
        except BaseException as e:  # pragma: no cover - reported to the parent
            code, msg = 2, repr(e)
        os.write(w, msg.encode())
        os._exit(code)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status), msg.decode()


def test_pid_written_without_newline_mode_0644_and_removed(tmp_path):
    path = str(tmp_path / "e.pid")
    pf = PidFile(path)
    pf.acquire()
    pf.write(4242)
    with open(path, "rb") as f:
        assert f.read() == b"4242"
    assert os.stat(path).st_mode & 0o777 == 0o644 & ~_umask()
    pf.release()
    assert not os.path.exists(path)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_second_instance_is_refused_with_the_running_pid(tmp_path):
    path = str(tmp_path / "e.pid")
    pf = PidFile(path)
    pf.acquire()
    pf.write(os.getpid())
    code, msg = _in_child(lambda: PidFile(path).acquire())
    assert code == 1
    assert msg == f"another instance is running (pid {os.getpid()}, pid file {path})"
    pf.release()
    code, msg = _in_child(lambda: PidFile(path).acquire())
    assert (code, msg) == (0, "")


def test_stale_file_without_lock_is_taken_over(tmp_path):
    path = tmp_path / "e.pid"
    path.write_bytes(b"99999")
    pf = PidFile(str(path))
    pf.acquire()
    pf.write(123)
    assert read_pid(str(path)) == 123
    pf.release()


def test_symlink_is_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"")
    link = tmp_path / "e.pid"
    link.symlink_to(target)
    with pytest.raises(PidFileError, match="cannot open pid file"):
        PidFile(str(link)).acquire()


def test_directory_is_refused(tmp_path):
    with pytest.raises(PidFileError):
        PidFile(str(tmp_path)).acquire()


def test_read_pid_of_garbage_is_none(tmp_path):
    p = tmp_path / "x.pid"
    p.write_bytes(b"abc")
    assert read_pid(str(p)) is None
    assert read_pid(str(tmp_path / "missing")) is None
