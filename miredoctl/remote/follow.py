"""`logs -f` across hosts: one long-running agent per host over plain ssh (sshdirect.py), its
JSON lines merged by time as they come.

Each host's agent runs `logs -f -n N --json` (`agent.py`, streaming mode): first its last N
lines, then a `{"live": true}` line, then new lines as its stamped log files grow. The
controller waits for every host's first part (or its end, or `FIRST_WAIT` seconds), prints the
last N lines of them all in time order, then prints new lines in time order after holding each
for `HOLD` seconds: a host's poll runs every half second, so a line from one host may arrive
after a younger line of another; the hold puts them back in order.

The agent's stdin stays open for as long as the stream runs: when the controller goes (Ctrl-C,
a kill, a dropped connection), the agent sees its stdin end and exits, so nothing is left
running on the hosts. The controller's own instances (no `host:`) are followed by the same
agent run here on the working tree (`LocalTarget`).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from miredoctl.listeners import timedlog
from miredoctl.remote.sshdirect import Target


@dataclass
class LocalTarget:
    """The controller's own instances (no `host:`): the same streaming agent, run here on the
    working tree, as every other command treats them."""

    fleet: Path
    state: Path

    def command(self, agent_args: list[str]) -> list[str]:
        return [sys.executable, "-m", "miredoctl.remote.agent", "--host", "",
                "--root", str(self.state), "--state-dir", str(self.state),
                "--fleet", str(self.fleet), *agent_args]


FIRST_WAIT = 10.0  # seconds for every host's last lines before printing what came
HOLD = 1.0  # seconds a new line waits for older lines of other hosts


def _format(line: dict[str, Any], width: int, as_json: bool) -> str:
    if as_json:
        return json.dumps(line) + "\n"
    who = f"{line['host']}/{line['name']}".ljust(width)
    return f"{who} | {timedlog.display_time(line.get('time'))} {line['text']}\n"


def _key(line: dict[str, Any]) -> float:
    return -1.0 if line.get("time") is None else float(line["time"])


def follow(targets: dict[str, Target | LocalTarget], agent_args: dict[str, list[str]],
           bundle: str, last: int, *, as_json: bool, out: TextIO = sys.stdout,
           err: TextIO = sys.stderr) -> int:
    """Stream until every host's stream ends (or Ctrl-C / SIGTERM); 5 when a host could not be
    reached, 1 when a host refused, else 0."""
    events: queue.Queue[tuple[str, str | None]] = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}

    def read(host: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            events.put((host, text))
        events.put((host, None))

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, stop)
    failed: dict[str, str] = {}
    width = 0
    try:
        for host, t in targets.items():
            proc = subprocess.Popen(t.command(agent_args[host]), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    bufsize=1)
            assert proc.stdin is not None
            try:
                proc.stdin.write(bundle + "\n")  # one line; the pipe then stays open
                proc.stdin.flush()
            except OSError:
                pass
            procs[host] = proc
            threading.Thread(target=read, args=(host, proc), daemon=True).start()
        first: list[dict[str, Any]] = []
        waiting = set(targets)
        live = set(targets)
        deadline = time.monotonic() + FIRST_WAIT
        held: list[tuple[float, dict[str, Any]]] = []  # (when it arrived, line)
        printed_first = False
        while live or held:
            now = time.monotonic()
            if not printed_first and (not waiting or now > deadline):
                first.sort(key=_key)
                width = max([width, *(len(ln["host"]) + 1 + len(ln["name"]) for ln in first)])
                for line in first[-last:] if last else []:
                    out.write(_format(line, width, as_json))
                out.flush()
                printed_first = True
            due = [e for e in held if e[0] + HOLD <= now or not live]
            if due:
                # the due lines, and any held line older than the youngest of them, in order
                upto = max(_key(e[1]) for e in due)
                go = [e for e in held if e in due or _key(e[1]) <= upto]
                held = [e for e in held if e not in go]
                for _arrived, line in sorted(go, key=lambda e: _key(e[1])):
                    out.write(_format(line, width, as_json))
                out.flush()
            if not live and not held:
                break
            try:
                host, text = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if text is None:
                live.discard(host)
                waiting.discard(host)
                if host not in failed:
                    failed[host] = _why_ended(procs[host])
                    if failed[host]:  # said at once: the other hosts' stream goes on
                        print(f"miredoctl: {host}: {failed[host]}", file=err, flush=True)
                continue
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if "schema" in doc:  # the agent's envelope: it refused (version, unpack)
                failed[host] = str(doc.get("stderr") or f"agent exit {doc.get('rc')}")
                print(f"miredoctl: {host}: refused ({failed[host]})", file=err, flush=True)
                continue
            if doc.get("live"):
                waiting.discard(host)
                continue
            line = {"host": host, "time": doc.get("time"), "name": doc.get("name", "?"),
                    "text": doc.get("text", "")}
            if host in waiting:
                first.append(line)
            else:
                held.append((now, line))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    code = 0
    for why in failed.values():
        if not why:
            continue
        code = 5 if "unreachable" in why else max(code, 1)
    return code


def _why_ended(proc: subprocess.Popen[str]) -> str:
    """'' for a stream that ended normally, else why (ssh's complaint for 255)."""
    try:
        rc = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    if rc == 0:
        return ""
    text = (proc.stderr.read() if proc.stderr else "").strip()
    if rc == 255:
        from miredoctl.remote.orchestrate import _ssh_error
        return f"unreachable ({_ssh_error(text)})"
    return f"agent exit {rc}: {text.splitlines()[-1] if text else ''}"
