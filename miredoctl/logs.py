"""`miredoctl logs`: the instances' logs interleaved by time, prefixed with the instance name.

The engines log to stderr, which supervisord captures; the `_logstamp` listener writes the same
lines with a time on each to `logs/timed/NAME.log` (see `miredoctl.listeners.timedlog`). Reading
those files directly (rather than over XML-RPC) keeps logs readable after the fleet's supervisord
has stopped, which is exactly when someone wants to know why. `-n` and `--since` apply to the merged
stream, as `journalctl` does, not to each instance.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from miredoctl.inventory import RESERVED_NAMES
from miredoctl.listeners.timedlog import LogLine, display_time, merge, parse_line, read_instance
from miredoctl.state import StatePaths


def collect(paths: StatePaths, names: list[str], since: float | None = None,
            last: int | None = None) -> list[LogLine]:
    return merge([read_instance(paths.timed_log(n), paths.log(n), n) for n in names],
                 since, last)


def _format(line: LogLine, width: int) -> str:
    if line.time is None:  # from before stamping: there is no time to show
        return f"{line.name.ljust(width)} | {line.text}\n"
    return f"{line.name.ljust(width)} | {display_time(line.time)} {line.text}\n"


def _json(line: LogLine) -> str:
    return json.dumps({"time": line.time, "name": line.name, "text": line.text}) + "\n"


class _Follower:
    """New lines of one stamped file since the last poll, across a rotation (the rotated file
    is read to its end before the new one is started)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        try:
            st = path.stat()
            self.ino, self.offset = st.st_ino, st.st_size
        except FileNotFoundError:
            self.ino, self.offset = None, 0

    def _read_from(self, path: Path, offset: int) -> tuple[list[LogLine], int]:
        """Complete lines after byte `offset`, and the offset after the last of them."""
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        cut = data.rfind(b"\n")
        if cut < 0:
            return [], offset  # only an unfinished line so far
        lines = []
        for raw in data[:cut].split(b"\n"):
            t, text = parse_line(raw.decode(errors="replace"))
            lines.append(LogLine(t, self.name, text))
        return lines, offset + cut + 1

    def poll(self) -> list[LogLine]:
        out: list[LogLine] = []
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return out
        if self.ino is not None and st.st_ino != self.ino:
            rotated = self.path.with_name(f"{self.path.name}.1")
            try:
                if rotated.stat().st_ino == self.ino:
                    out += self._read_from(rotated, self.offset)[0]
            except FileNotFoundError:
                pass
            self.offset = 0
        elif st.st_size < self.offset:  # truncated
            self.offset = 0
        self.ino = st.st_ino
        if st.st_size > self.offset:
            lines, self.offset = self._read_from(self.path, self.offset)
            out += lines
        return out


def show(paths: StatePaths, names: list[str], n: int, follow: bool,
         out: TextIO = sys.stdout, poll: float = 0.5, max_polls: int | None = None,
         since: float | None = None, as_json: bool = False) -> None:
    """Print the last `n` merged lines (after `since`), then with `follow` new lines as they
    come, each poll's batch in time order."""
    width = max((len(name) for name in names), default=0)
    fmt = _json if as_json else (lambda ln: _format(ln, width))
    followers = [_Follower(paths.timed_log(name), name) for name in names] if follow else []
    for line in collect(paths, names, since, n):
        out.write(fmt(line))
    out.flush()
    polls = 0
    while follow and (max_polls is None or polls < max_polls):
        polls += 1
        time.sleep(poll)
        batch = [ln for f in followers for ln in f.poll()]
        batch.sort(key=lambda ln: -1.0 if ln.time is None else ln.time)
        for line in batch:
            out.write(fmt(line))
        out.flush()


def known_names(paths: StatePaths) -> tuple[str, ...]:
    """Instances that have a log in this state folder (also ones no longer in the inventory)."""
    found = {p.stem for p in paths.logs.glob("*.log")} | \
        {p.stem for p in paths.timed_logs.glob("*.log")}
    return tuple(sorted(n for n in found if n not in RESERVED_NAMES
                        and not n.startswith("_") and os.sep not in n))
