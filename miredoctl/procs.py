"""The two process facts the manager relies on: how a command runs inside a namespace, and
whether a pid still runs.

Kept apart from the network lab (`teredolab`), which builds and removes namespaces: the manager
only ever *runs* engines in namespaces the operator (or the lab) made, and checks pids it got
from supervisord or a pid file. One definition each, so `render`, `status`, `ops` and the
supervisord client agree on what "inside netns NS" and "still running" mean.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def exec_argv(ns: str, argv: Sequence[str], ip: str = "ip") -> list[str]:
    """The command line that runs `argv` inside `ns`.

    `ip netns exec` execs the command (no shell, no fork outside batch mode), so the pid a
    caller (supervisord, a test) watches is the command's own and signals reach it directly.
    """
    return [ip, "netns", "exec", ns, *argv]


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone because its parent reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): look at its state letter.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def read_pid(path: Path) -> int | None:
    """The pid a pid file names, None when it is missing, empty or not a number.

    Daemons (miredo, supervisord, our engine) create the file before they write the number, so
    a reader can find it empty: that is "not written yet", not an error.
    """
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
