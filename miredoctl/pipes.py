"""A reader that stops early (`miredoctl status | head -1`, `logs -f | grep -m1 ...`) is not
an error: like `cat`, miredoctl then exits quietly with status 0.

Python reports a closed pipe as BrokenPipeError on the write, or at exit when it flushes
stdout (then as "Exception ignored" and status 120). `quiet` points stdout at /dev/null so
that last flush has nowhere to fail.
"""

from __future__ import annotations

import os
import select
import sys

EXIT_OK = 0


def stdout_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll says POLLERR): a BrokenPipeError
    from supervisord's socket must still be reported as a failed connection."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _fd, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def quiet() -> int:
    """After a BrokenPipeError on stdout: silence it for good and say success."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (embedded, tests): nothing to silence
        pass
    return EXIT_OK


def flushed(code: int) -> int:
    """Flush stdout while a closed pipe can still be answered quietly; then the exit code."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return quiet()
    return code
