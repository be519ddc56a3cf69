"""supervisord event listener that kills what an engine leaves behind when it dies unexpectedly.

Why: supervisord's `killasgroup` only applies when supervisord itself stops a program. If an
engine's main process is killed from outside (OOM killer, `kill -9`), Debian's miredo leaves its
forked worker running; the worker keeps the TUN interface, so every restart then fails with
"Cannot create IPv6 tunnel" and the instance ends FATAL. supervisord starts each program in its
own process group (pgid = the program's pid), so on PROCESS_STATE_EXITED we SIGKILL that group.
Run by supervisord as `python -m miredoctl.reaper`; stdout is the listener protocol channel.
"""

from __future__ import annotations

import os
import signal
import sys

from supervisor import childutils


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


def main() -> int:
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers.get("eventname") == "PROCESS_STATE_EXITED":
            print(reap(payload), file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
