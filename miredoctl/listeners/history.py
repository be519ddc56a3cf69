"""Process state history per instance: restart counts and flapping detection.

Why: supervisord keeps no restart count, and an engine that dies *after* `startsecs` is
RUNNING -> EXITED -> STARTING -> RUNNING forever without ever reaching FATAL, so `status` would
show a healthy RUNNING crash loop. The fleet's event listener (`listeners.reaper`) appends every
process state change supervisord announces to `history/NAME.jsonl` in the state folder; `status`
reads it back. The folder is the fleet's own, so the counts survive miredoctl invocations and a
restart of supervisord and a reboot (the history folder is under /var/lib).

Counting rules (supervisord's process state machine: a process that exits is EXITED, then
STARTING again if autorestart; a start that fails before `startsecs` is BACKOFF, then STARTING
again, until `startretries` make it FATAL; only an operator leaves STOPPED or FATAL):
* STARTING entered from EXITED or BACKOFF is an *automatic* restart by supervisord;
* STARTING entered from STOPPED or FATAL is an operator start (`up`, `restart`, a rollback,
  supervisord starting; supervisord itself never leaves FATAL): it resets the count, so
  "restarts" means "crashes since someone last started it". Not when the record before it
  is a live state (STARTING, RUNNING, BACKOFF): then the previous life ended unrecorded
  (a reboot, a killed supervisord) and the new supervisord's STOPPED is its own fresh start,
  not an operator's; the count carries over (the history lives in /var/lib and survives a
  reboot, docs/miredoctl.md "Boot, service and layout");
* FLAPPING: at least FLAP_RESTARTS automatic restarts within the last FLAP_WINDOW seconds.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.states import ProcessStates, getProcessStateDescription

from miredoctl.state import write_atomic

FLAP_WINDOW = 300.0
FLAP_RESTARTS = 3
KEEP = 500  # records kept per instance when the file is trimmed
# A record is about 80 bytes; a longer line is not one (and json.loads on a few thousand nested
# brackets raises RecursionError). The reader looks at the last MAX_READ bytes only: a trimmed
# file holds 2 * KEEP records.
MAX_LINE = 1024
MAX_READ = 1 << 20
RECORD_START = '{"t":'
# supervisord names an event after the state entered: PROCESS_STATE_<statename>
EVENT_PREFIX = "PROCESS_STATE_"
# Transitions keep supervisord's state *names*: that is what its events carry and what the
# history files hold, so the names are taken from supervisor's own table.
STARTING = getProcessStateDescription(ProcessStates.STARTING)
EXITED = getProcessStateDescription(ProcessStates.EXITED)
AUTOMATIC_FROM = frozenset(getProcessStateDescription(c)
                           for c in (ProcessStates.EXITED, ProcessStates.BACKOFF))
OPERATOR_FROM = frozenset(getProcessStateDescription(c)
                          for c in (ProcessStates.STOPPED, ProcessStates.FATAL))
LIVE = frozenset(getProcessStateDescription(c)
                 for c in (ProcessStates.STARTING, ProcessStates.RUNNING, ProcessStates.BACKOFF))


@dataclass(frozen=True)
class Transition:
    """One state change as supervisord announced it (times are Unix seconds)."""

    time: float
    state: str
    from_state: str
    pid: int | None = None
    expected: bool | None = None


def transition_from_event(event: str, headers: dict[str, str], now: float) -> Transition | None:
    """PROCESS_STATE_<STATE> event headers -> Transition (None for other events)."""
    if not event.startswith(EVENT_PREFIX):
        return None
    pid = headers.get("pid")
    expected = headers.get("expected")
    return Transition(now, event[len(EVENT_PREFIX):], headers.get("from_state", ""),
                      int(pid) if pid and pid.isdigit() else None,
                      None if expected is None else expected == "1")


def record(path: Path, tr: Transition) -> None:
    """Append one JSON line; trim to the last KEEP records once the file holds twice that.

    Only a regular file is appended to: opening a FIFO put there would block the listener, and
    with it every event supervisord sends. A last line without its newline (a writer that died
    mid-line, a full disk) is ended first, so it cannot swallow this record.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"t": tr.time, "state": tr.state, "from": tr.from_state, "pid": tr.pid,
                       "expected": tr.expected}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if path.stat().st_size > KEEP * 2 * 50:  # a record is 50+ bytes: cheap check first
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > KEEP * 2:
            write_atomic(path, "".join(lines[-KEEP:]))


def read_tail(path: Path, limit: int = MAX_READ) -> str:
    """The last `limit` bytes of a regular file ("" if missing or not a regular file).

    Bounded and non-blocking, because a history file is read by every status command: a FIFO
    or device in its place must not hang them, a directory must not crash them, a huge file
    must not fill memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ""
        start = max(0, info.st_size - limit)
        data = os.pread(fd, limit, start)
    except OSError:
        return ""
    finally:
        os.close(fd)
    if start:  # the first line is cut: drop it
        data = data.partition(b"\n")[2]
    return data.decode(errors="replace")


def _parse(line: str) -> Transition | None:
    if len(line) > MAX_LINE:
        return None
    try:
        d: Any = json.loads(line)
        t = float(d["t"])
        if not math.isfinite(t) or t < 0:
            return None
        pid = d.get("pid")
        expected = d.get("expected")
        return Transition(t, str(d["state"]), str(d.get("from", "")),
                          pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                          expected if isinstance(expected, bool) else None)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError):
        return None


def load(path: Path) -> list[Transition]:
    """Records in file order; garbage, impossible times (-inf, NaN) and a torn last line (writer
    busy) are skipped. A line holding a torn record followed by a whole one (written before
    `record` ended torn lines) gives the whole one."""
    out = []
    for line in read_tail(path).splitlines():
        tr = _parse(line)
        if tr is None and RECORD_START in line[1:]:
            tr = _parse(line[line.rindex(RECORD_START):])
        if tr is not None:
            out.append(tr)
    return out


@dataclass
class Summary:
    """What `status` shows from the history."""

    restarts: int = 0  # automatic restarts since the last operator start
    recent_restarts: int = 0  # of those, within the flap window
    flapping: bool = False
    last_change: float | None = None
    last_exit: float | None = None
    last_exit_expected: bool | None = None


def summarize(transitions: list[Transition], now: float, window: float = FLAP_WINDOW,
              threshold: int = FLAP_RESTARTS) -> Summary:
    s = Summary()
    times: list[float] = []
    before: str | None = None  # the state the previous record entered
    for tr in transitions:
        s.last_change = tr.time
        if tr.state == STARTING:
            if tr.from_state in AUTOMATIC_FROM:
                times.append(tr.time)
            elif tr.from_state in OPERATOR_FROM and before not in LIVE:
                times = []
        elif tr.state == EXITED:
            s.last_exit, s.last_exit_expected = tr.time, tr.expected
        before = tr.state
    s.restarts = len(times)
    s.recent_restarts = sum(1 for t in times if now - window <= t <= now + 1)
    s.flapping = s.recent_restarts >= threshold
    return s
