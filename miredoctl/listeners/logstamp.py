"""supervisord event listener that writes each instance's output with a time on every line.

Run by the fleet's supervisord as `python -m miredoctl.listeners.logstamp --logs DIR` (program
`_logstamp`); the engines' programs set `stdout_events_enabled=true` (stderr is redirected into
stdout), so supervisord sends this listener a PROCESS_LOG_STDOUT event with every chunk it reads.
See `miredoctl.listeners.timedlog` for why and for the file format. stdout is the listener protocol
channel; problems go to stderr (supervisord's `logs/logstamp.log`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from supervisor import childutils
from supervisor.states import ProcessStates, getProcessStateDescription

from miredoctl.listeners.history import EVENT_PREFIX
from miredoctl.listeners.timedlog import TimedWriter

# The states that end a process's output: its unfinished last line is written out then. The
# order is the one the rendered supervisord.conf subscribes in (render.supervisord_conf).
FLUSH_ON: tuple[str, ...] = tuple(
    EVENT_PREFIX + getProcessStateDescription(code)
    for code in (ProcessStates.EXITED, ProcessStates.STOPPED, ProcessStates.FATAL,
                 ProcessStates.BACKOFF))
EVENTS: tuple[str, ...] = ("PROCESS_LOG", *FLUSH_ON)


def handle(writer: TimedWriter, event: str, payload: str, now: float) -> None:
    """One event: log data is stamped; the end of a process flushes its unfinished line."""
    if event.startswith("PROCESS_LOG"):
        headers, data = childutils.eventdata(payload)
        name = headers.get("processname", "")
        if name and not name.startswith("_"):
            writer.feed(name, data, now)
    elif event in FLUSH_ON:
        name = childutils.get_headers(payload).get("processname", "")
        if name and not name.startswith("_"):
            writer.flush(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miredoctl.listeners.logstamp")
    parser.add_argument("--logs", required=True, type=Path, help="folder for NAME.log files")
    args = parser.parse_args(argv)
    writer = TimedWriter(args.logs)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            handle(writer, headers.get("eventname", ""), payload, time.time())
        except OSError as exc:  # a full disk must not stop the listener (events would pile up)
            print(f"logstamp: {exc}", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
