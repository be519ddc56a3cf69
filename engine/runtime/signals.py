"""Signals turned into readable bytes, so the event loops handle them between batches.

Python's C-level handler writes the signal number to a wakeup descriptor; we register that
descriptor in epoll and read the numbers there, so no Python code runs in the middle of a
packet batch and there is no race between "check a flag" and "sleep in epoll".
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterable

from engine.runtime import privcalls  # at import time: the worker calls it after its chroot


def _noop(signum: int, frame: object) -> None:
    """A Python-level handler must exist for the wakeup byte to be written."""


class SignalPipe:
    """Owns the wakeup socketpair; `drain()` returns the signal numbers received since last time."""

    def __init__(self, signums: Iterable[int]) -> None:
        self._r, self._w = socket.socketpair()
        for s in (self._r, self._w):
            s.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self.signums = tuple(signums)
        for signum in self.signums:
            signal.signal(signum, _noop)

    def fileno(self) -> int:
        return self._r.fileno()

    def drain(self) -> list[int]:
        out: list[int] = []
        while True:
            try:
                data = self._r.recv(256)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            out.extend(data)
        return out

    def close(self) -> None:
        """Restore the default dispositions and stop writing wakeup bytes (forked child)."""
        signal.set_wakeup_fd(-1)
        for signum in self.signums:
            signal.signal(signum, signal.SIG_DFL)
        self._r.close()
        self._w.close()


def ignore_user_signals() -> None:
    """SIGUSR1/SIGUSR2 do nothing (miredo's man page says so; its code dies on them)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def set_parent_death_signal(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to signal a worker whose privileged parent vanished (Linux prctl)."""
    try:
        privcalls.prctl(privcalls.PR_SET_PDEATHSIG, signum)
    except OSError:
        pass


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


__all__ = ["SignalPipe", "ignore_user_signals", "name", "set_parent_death_signal"]
