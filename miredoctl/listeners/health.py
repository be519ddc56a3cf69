"""supervisord event listener that heals: restarts unqualified clients, stops flapping instances,
and notifies (the rules: listeners/healthrules.py; notifications: listeners/notify.py).

Why an event listener: supervisord already tells it every process state change as it happens
(PROCESS_STATE), and its TICK_5 events are a clock, so nothing else has to run or poll
supervisord. At each tick the listener asks every RUNNING client how its tunnel is (the same
sources as `status`: teredo-engine's status socket, the kernel for Debian's miredo).

Acting never fights an operator: an action is taken only while this listener holds the fleet
lock (taken without waiting: when `up`, `down`, `restart` or `reload` hold it, the action waits
for a later tick), and only on the process judged (a restart checks the pid first). A stop for
flapping leaves a mark (health/NAME.stopped) that `status` shows; only an operator start clears
it. Every action is written to history/NAME.health.jsonl and to this listener's log.

Run by supervisord as `python -m miredoctl.listeners.health --history DIR --socket SOCK --run DIR
--lock FILE` (program `_healer`, events PROCESS_STATE and TICK_5); stdout is the listener
protocol channel, stderr its log (logs/_healer.log).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor import childutils
from supervisor.xmlrpc import Faults, SupervisorTransport

from miredoctl.listeners import healthrules as health
from miredoctl.listeners import history
from miredoctl.listeners.engineprobe import decode_teredo, query_engine
from miredoctl.listeners.notify import HEALTH_ACTION, Notifier

RPC_TIMEOUT = 30.0  # a stop waits up to stopwaitsecs (10 s) and the kill after it
PROBE_TIMEOUT = 2.0
TICK_PREFIX = "TICK_"


def log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {line}", file=sys.stderr, flush=True)


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to supervisord's unix socket, with a timeout."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def rpc(sock: Path) -> Any:
    transport = SupervisorTransport(None, None, f"unix://{sock}")
    transport._get_connection = lambda: _UnixConnection(str(sock), RPC_TIMEOUT)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


@contextlib.contextmanager
def try_fleet_lock(lock: Path) -> Iterator[bool]:
    """The fleet lock if it is free right now (True), else False at once: an operator's
    command is at work and the healer keeps its hands off (miredoctl/state.py's fleet lock)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        log(f"cannot open the fleet lock {lock}: {exc}")
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} miredoctl health check\n".encode(), 0)
        except OSError:
            pass
        yield True
    finally:
        os.close(fd)


def teredo_address(netns: str | None, interface: str) -> str | None:
    """The Teredo address (2001::/32) on a tunnel interface, as the kernel shows it in the
    instance's namespace; None when there is none (not qualified) or no such interface."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "-6", "addr", "show", "dev", interface]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        links = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            local = info.get("local", "") if isinstance(info, dict) else ""
            if decode_teredo(local):
                return local
    return None


class Listener:
    """The healer's state between events; `handle` takes one event."""

    def __init__(self, histories: Path, sock: Path, run: Path, lock: Path,
                 notifier: Notifier | None = None) -> None:
        self.histories, self.sock, self.run, self.lock = histories, sock, run, lock
        self.settings_file = health.settings_path(histories)
        self.settings_key: tuple[int, int] | None = None
        self.healer = health.Healer()
        self.notifier = notifier or Notifier(log)
        self.seeded: set[str] = set()
        self.reload_settings()

    # -- settings --------------------------------------------------------------------------
    def reload_settings(self) -> None:
        """Re-read health.json when `up` rewrote it (cheap stat per event)."""
        try:
            st = self.settings_file.stat()
            key: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except OSError:
            key = None
        if key == self.settings_key:
            return
        self.settings_key = key
        self.healer.settings = health.load_settings(self.settings_file)
        for name in self.healer.settings.instances:
            if name not in self.seeded:
                self.seeded.add(name)
                self.healer.seed(name, history.load(self.histories / f"{name}.jsonl"))

    # -- events ----------------------------------------------------------------------------
    def handle(self, event: str, payload: str, now: float) -> None:
        self.reload_settings()
        if event.startswith(history.EVENT_PREFIX):
            headers = childutils.get_headers(payload)
            name = headers.get("processname", "")
            if not name or name.startswith("_") or "/" in name:
                return
            state = event[len(history.EVENT_PREFIX):]
            marked = health.read_mark(self.histories, name) is not None
            actions, events, clear = self.healer.process_state(
                name, state, headers.get("from_state", ""), now, marked)
            if clear and health.clear_mark(self.histories, name):
                log(f"{name}: started by an operator; the health check's stop no longer holds")
            self.emit(events, now)
            self.act(actions, now)
        elif event.startswith(TICK_PREFIX):
            self.tick(now)

    def tick(self, now: float) -> None:
        try:
            infos = {p["name"]: p for p in rpc(self.sock).supervisor.getAllProcessInfo()
                     if not p["name"].startswith("_")}
        except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
            log(f"supervisord did not answer: {exc}")
            return
        actions: list[health.Action] = []
        for name, info in sorted(infos.items()):
            inst = self.healer.settings.instances.get(name)
            if inst is None:
                continue
            marked = health.read_mark(self.histories, name) is not None
            self.healer.tracked.setdefault(name, health._Tracked()).state = info["statename"]
            actions += self.healer.flapping_actions(name, now, marked)
            if inst.role != "client" or info["statename"] != "RUNNING" or not info.get("pid"):
                continue
            probe = self.probe(inst, int(info["pid"]), float(info.get("start") or now))
            if probe is None:
                continue
            more, events = self.healer.probe(name, probe, now)
            self.emit(events, now)
            actions += more
        self.act(actions, now)

    def probe(self, inst: health.InstanceHealth, pid: int, started: float
              ) -> health.Probe | None:
        """How the client's tunnel is, from the sources `status` reads (teredo-engine's status
        socket, contract §4; the kernel for Debian's miredo). An engine that does not answer is
        not qualified (it forwards nothing); another pid answering, or nothing to read yet
        (starting, gone), is no answer: the next tick looks again."""
        if inst.engine == "teredo-engine":
            try:
                answer = query_engine(self.run / f"{inst.name}.sock", PROBE_TIMEOUT)
            except TimeoutError:
                return health.Probe(pid, started, False)
            except (OSError, ValueError):
                return None
            if not isinstance(answer, dict) or answer.get("pid") != pid:
                return None
            if answer.get("worker") not in (None, "running"):
                return health.Probe(pid, started, False)
            address = answer.get("address") if isinstance(answer.get("address"), str) else None
            mapped = answer.get("mapped")
            mapped_text = (f"{mapped['ip']}:{mapped.get('port')}"
                           if isinstance(mapped, dict) and mapped.get("ip") else None)
            qualified = answer.get("state") == "qualified" and bool(address)
            return health.Probe(pid, started, qualified, address, mapped_text)
        if not inst.interface:
            return None
        address = teredo_address(inst.netns, inst.interface)
        if address is None:
            return health.Probe(pid, started, False)
        decoded = decode_teredo(address)
        mapped_text = f"{decoded[1]}:{decoded[2]}" if decoded else None
        return health.Probe(pid, started, True, address, mapped_text)

    # -- output ----------------------------------------------------------------------------
    def emit(self, events: list[health.Event], now: float) -> None:
        for ev in events:
            log(f"{ev.name}: {ev.kind}: {ev.detail}")
            self.notify(ev.kind, ev.name, ev.detail, now, ev.data)

    def notify(self, kind: str, name: str, detail: str, now: float,
               data: dict[str, Any] | None = None) -> None:
        settings = self.healer.settings
        event = {"event": kind, "instance": name, "detail": detail, "time": now,
                 "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                 "fleet": settings.fleet, "host": socket.gethostname(), **(data or {})}
        inst = settings.instances.get(name)
        if inst is not None:
            event.update(role=inst.role, engine=inst.engine)
        self.notifier.send(settings.notify, event)

    def act(self, actions: list[health.Action], now: float) -> None:
        if not actions:
            return
        with try_fleet_lock(self.lock) as held:
            for action in actions:
                if not held:
                    log(f"{action.name}: {action.kind} ({action.reason}) waits: an operator's "
                        "command holds the fleet lock")
                    self.healer.tracked[action.name].last_restart = None
                    continue
                try:
                    done = self.carry_out(action)
                except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
                    log(f"{action.name}: {action.kind} failed: {exc}")
                    continue
                if not done:
                    continue
                record = health.ActionRecord(now, action.kind, action.reason)
                try:
                    health.record_action(self.histories, action.name, action.kind,
                                         action.reason, now)
                except OSError as exc:
                    log(f"history: {exc}")
                log(f"{action.name}: {record.text}")
                self.notify(HEALTH_ACTION, action.name, record.text, now,
                            {"action": action.kind, "reason": action.reason})

    def carry_out(self, action: health.Action) -> bool:
        """Do it through supervisord; False when the process is no longer what was judged."""
        proxy = rpc(self.sock).supervisor
        try:
            info = proxy.getProcessInfo(action.name)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == Faults.BAD_NAME:
                return False
            raise
        if action.kind == health.RESTART:
            if info["statename"] != "RUNNING" or info["pid"] != action.pid:
                return False
            self._stop(proxy, action.name)
            proxy.startProcess(action.name, False)
            return True
        if health.read_mark(self.histories, action.name) is not None:
            return False
        # the mark first: the STOPPED event that follows must find it; a stop that failed
        # takes it back, so the next tick decides again
        health.write_mark(self.histories, action.name, action.reason, time.time())
        if info["statename"] in health.ACTIVE_NAMES:
            try:
                self._stop(proxy, action.name)
            except BaseException:
                health.clear_mark(self.histories, action.name)
                raise
        return True

    @staticmethod
    def _stop(proxy: Any, name: str) -> None:
        try:
            proxy.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.NOT_RUNNING:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miredoctl.listeners.health")
    parser.add_argument("--history", type=Path, required=True,
                        help="the fleet's history folder (health.json and health/ beside it)")
    parser.add_argument("--socket", type=Path, required=True, help="supervisord's socket")
    parser.add_argument("--run", type=Path, required=True, help="the engines' status sockets")
    parser.add_argument("--lock", type=Path, required=True, help="the fleet lock file")
    args = parser.parse_args(argv)
    listener = Listener(args.history, args.socket, args.run, args.lock)
    log(f"health check listening (pid {os.getpid()})")
    while True:
        if sys.stdin.closed:
            return 0
        try:
            headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        except (ValueError, KeyError, OSError):  # supervisord went away: stdin at its end
            return 0
        try:
            listener.handle(headers.get("eventname", ""), payload, time.time())
        except Exception as exc:  # never stop answering supervisord
            log(f"error: {type(exc).__name__}: {exc}")
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
