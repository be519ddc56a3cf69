"""Timestamped instance logs: the format, the writer behind `_logstamp`, and the merged reader.

Why a second log per instance: neither the engines (ours nor Debian's miredo) nor supervisord put
a time on the lines they write to `logs/NAME.log`, so those files cannot be interleaved or cut at
`--since`. supervisord can hand every chunk it reads from an engine to an event listener
(`stdout_events_enabled`); the listener (`listeners.logstamp`) stamps each line with the time it
received it and appends it to `logs/timed/NAME.log`, one line per line:

    2026-11-26T04:39:43.123456Z <the engine's line>

(UTC, so merging never depends on the reader's time zone). One listener receives the chunks of
every instance in the order supervisord read them, so the stamps of different instances are
comparable. The raw `logs/NAME.log` stays as it was (supervisord's own, used for failure
messages).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from miredoctl.errors import UsageError

MAX_BYTES = 5 * 1024 * 1024  # as supervisord's per-instance log (render.PROGRAM_SETTINGS)
BACKUPS = 3
_STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@dataclass(frozen=True)
class LogLine:
    """One line of one instance; `time` is None for lines from before stamping existed."""

    time: float | None
    name: str
    text: str


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_line(t: float, text: str) -> str:
    return f"{stamp(t)} {text}\n"


def parse_line(line: str) -> tuple[float | None, str]:
    """(time, text); a line without a valid stamp keeps its whole text and no time."""
    line = line.rstrip("\n")
    head, sep, rest = line.partition(" ")
    if sep and _STAMP_RE.match(head):
        with contextlib.suppress(ValueError):  # e.g. month 13: not a stamp after all
            return datetime.fromisoformat(head).timestamp(), rest
    return None, line


class TimedWriter:
    """Turns supervisord's output chunks into stamped lines, one file per instance.

    A chunk may end in the middle of a line; the part after the last newline waits for the
    next chunk (and keeps the time its first byte arrived), or for `flush` when the process
    exits, so a line is never split in two.
    """

    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.backups = backups
        self.pending: dict[str, tuple[float, str]] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def feed(self, name: str, data: str, now: float) -> None:
        started, partial = self.pending.pop(name, (now, ""))
        text = partial + data
        *lines, rest = text.split("\n")
        first_time = started if partial else now
        if rest:  # an unfinished line began now, unless it continues the pending one
            self.pending[name] = (now if lines else first_time, rest)
        if lines:
            self._write(name, [format_line(first_time, lines[0])]
                        + [format_line(now, line) for line in lines[1:]])

    def flush(self, name: str) -> None:
        started, partial = self.pending.pop(name, (0.0, ""))
        if partial:
            self._write(name, [format_line(started, partial)])

    def _write(self, name: str, lines: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size >= self.max_bytes:
                self._rotate(path)
        with path.open("a", errors="replace") as fh:
            fh.writelines(lines)

    def _rotate(self, path: Path) -> None:
        for i in range(self.backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
        if self.backups:
            os.replace(path, path.with_name(f"{path.name}.1"))
        else:
            path.unlink()


def read_instance(timed: Path, raw: Path, name: str) -> list[LogLine]:
    """All lines of one instance, oldest first: the stamped file and its rotations, or (for a
    state folder from before stamping) the raw supervisord log with no times."""
    files = [timed.with_name(f"{timed.name}.{i}") for i in range(BACKUPS, 0, -1)] + [timed]
    files = [f for f in files if f.exists()]
    out: list[LogLine] = []
    if not files:
        files = [raw] if raw.exists() else []
        for f in files:
            with f.open("r", errors="replace") as fh:
                out.extend(LogLine(None, name, line.rstrip("\n")) for line in fh)
        return out
    for f in files:
        with f.open("r", errors="replace") as fh:
            for line in fh:
                t, text = parse_line(line)
                out.append(LogLine(t, name, text))
    return out


def merge(per_instance: list[list[LogLine]], since: float | None = None,
          last: int | None = None) -> list[LogLine]:
    """Interleave by time (lines without a time first, in file order), cut at `since`, then
    keep the last `last` lines of the merged stream (not per instance)."""
    merged = list(heapq.merge(*per_instance, key=lambda ln: -1.0 if ln.time is None
                              else ln.time))
    if since is not None:
        merged = [ln for ln in merged if ln.time is not None and ln.time >= since]
    if last is not None:
        merged = merged[-last:] if last > 0 else []
    return merged


_RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """`--since`: `30s`, `10m`, `2h`, `1d` ago; an ISO date/time (local time unless it carries
    a zone, like journalctl); or `HH:MM[:SS]` today. Raises UsageError naming the value."""
    value = text.strip()
    m = _RELATIVE_RE.match(value)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        if re.fullmatch(r"\d\d?:\d\d(:\d\d(\.\d+)?)?", value):
            today = datetime.fromtimestamp(now).date().isoformat()
            when = datetime.fromisoformat(f"{today}T{value}")
        else:
            when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {text!r}: expected e.g. 10m, 2h, 1d, 14:05, "
                         "2026-11-26 14:05:00 or 2026-11-26T13:05:00Z")
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as the operator reads the clock
    return when.timestamp()


def display_time(t: float | None) -> str:
    """Local time with milliseconds; lines from before stamping show dashes of the same width."""
    if t is None:
        return "-" * 23
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]

