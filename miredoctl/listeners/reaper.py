"""supervisord event listener that kills what an engine leaves behind when it dies unexpectedly.

Why: supervisord's `killasgroup` only applies when supervisord itself stops a program. If an
engine's main process is killed from outside (OOM killer, `kill -9`), Debian's miredo leaves its
forked worker running; the worker keeps the TUN interface, so every restart then fails with
"Cannot create IPv6 tunnel" and the instance ends FATAL. supervisord starts each program in its
own process group (pgid = the program's pid), so on PROCESS_STATE_EXITED we SIGKILL that group.

The same listener records every process state change of the instances in the state folder
(`history/NAME.jsonl`, see `miredoctl.listeners.history`): it already sees each change as it
happens, so restart counts need no polling. Run by supervisord as
`python -m miredoctl.listeners.reaper --history DIR` (program `_reaper`, subscribed to
PROCESS_STATE); stdout is the listener protocol channel.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from supervisor import childutils
from supervisor.states import ProcessStates, getProcessStateDescription

from miredoctl.listeners import history

EXITED_EVENT = history.EVENT_PREFIX + getProcessStateDescription(ProcessStates.EXITED)


def reap(payload: str) -> str:
    """Kill the exited program's process group; returns a log line."""
    headers = childutils.get_headers(payload)
    name, pid = headers.get("processname", "?"), int(headers.get("pid", "0") or 0)
    if pid <= 1:
        return f"{name}: no pid in event"
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return f"{name}: pid {pid} left nothing behind"
    except PermissionError as exc:
        return f"{name}: cannot kill group {pid}: {exc}"
    return f"{name}: killed leftover processes of group {pid}"


def note(folder: Path, event: str, payload: str, now: float) -> None:
    """Append an instance's state change to its history (miredoctl's own '_' helpers skipped)."""
    headers = childutils.get_headers(payload)
    name = headers.get("processname", "")
    tr = history.transition_from_event(event, headers, now)
    if tr is not None and name and not name.startswith("_") and "/" not in name:
        history.record(folder / f"{name}.jsonl", tr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miredoctl.listeners.reaper")
    parser.add_argument("--history", type=Path, help="folder for NAME.jsonl state histories")
    args = parser.parse_args(argv)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = headers.get("eventname", "")
        if event == EXITED_EVENT:
            print(reap(payload), file=sys.stderr, flush=True)
        if args.history is not None:
            try:
                note(args.history, event, payload, time.time())
            except OSError as exc:  # never stop answering supervisord
                print(f"history: {exc}", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
