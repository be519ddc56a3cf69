"""The pid file, locked the way miredo locks it.

miredo opens the file with ``O_WRONLY|O_CREAT|O_NOFOLLOW`` (so a symlink planted in /run cannot
redirect a root write), mode 0644, insists on a regular file, takes ``lockf(F_TLOCK)`` and writes
the decimal pid with no newline.  The lock -- not the file's existence -- is what says "an
instance is running", so a stale file left by a crash never blocks a restart.

POSIX record locks belong to the process and vanish when that process closes *any* descriptor
of the file, so the holder must never open the file a second time; only a competing instance
reads it (to name the running pid in its error).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat


class PidFileError(Exception):
    """The pid file cannot be taken; ``str()`` is the one line shown to the user."""


class PidFile:
    """An acquired, locked pid file; `release()` unlinks it (only the holder does that)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        """Open, check and lock the file, or raise `PidFileError` naming the holder."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise PidFileError(f"cannot open pid file {self.path}: {e.strerror}")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PidFileError(f"pid file {self.path} is not a regular file")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    holder = read_pid(self.path)
                    who = f"pid {holder}" if holder is not None else "pid unknown"
                    raise PidFileError(
                        f"another instance is running ({who}, pid file {self.path})"
                    )
                raise PidFileError(f"cannot lock pid file {self.path}: {e.strerror}")
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def write(self, pid: int) -> None:
        """Record `pid` (decimal, no newline) and push it to disk like miredo's fdatasync."""
        assert self.fd is not None, "acquire() first"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(pid).encode("ascii"), 0)
        os.fdatasync(self.fd)

    def release(self) -> None:
        """Unlink, then close (closing drops the lock; unlinking first avoids a window)."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def close_in_child(self) -> None:
        """Drop the inherited descriptor in a forked worker without touching the file."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_pid(path: str) -> int | None:
    """The pid recorded in `path`, or None when absent or not a number."""
    try:
        with open(path, "rb") as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
