"""`miredoctl logs`: the instances' logs, merged and prefixed with the instance name.

The engines log to stderr, which supervisord writes to one file per instance in the state
folder. Reading those files directly (rather than over XML-RPC) keeps logs readable after the
fleet's supervisord has stopped, which is exactly when someone wants to know why.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from miredoctl.state import StatePaths


def tail_lines(path: Path, n: int) -> list[str]:
    try:
        with path.open("r", errors="replace") as fh:
            return list(deque(fh, maxlen=n)) if n > 0 else []
    except FileNotFoundError:
        return []


def show(paths: StatePaths, names: list[str], n: int, follow: bool,
         out: TextIO = sys.stdout, poll: float = 0.5, max_polls: int | None = None) -> None:
    width = max((len(name) for name in names), default=0)
    for name in names:
        for line in tail_lines(paths.log(name), n):
            out.write(f"{name.ljust(width)} | {line.rstrip()}\n")
    out.flush()
    if not follow:
        return
    offsets = {}
    for name in names:
        try:
            offsets[name] = paths.log(name).stat().st_size
        except FileNotFoundError:
            offsets[name] = 0
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        time.sleep(poll)
        for name in names:
            path = paths.log(name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offsets[name]:  # rotated or truncated
                offsets[name] = 0
            if size == offsets[name]:
                continue
            with path.open("r", errors="replace") as fh:
                fh.seek(offsets[name])
                data = fh.read()
                offsets[name] = fh.tell()
            for line in data.splitlines():
                out.write(f"{name.ljust(width)} | {line}\n")
        out.flush()
