"""`SupervisordClient`: the fleet's own supervisord, found, started and driven over XML-RPC on
its unix socket.

Why our own supervisord per fleet (not the distro one): program names, `reloadConfig` diffs and
shutdowns then only ever concern this fleet, and the socket's `identifier` proves to us that the
daemon answering is the one we started for this state folder.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.options import ServerOptions
from supervisor.states import RUNNING_STATES, ProcessStates, getProcessStateDescription
from supervisor.xmlrpc import Faults, SupervisorTransport

from miredoctl import access
from miredoctl.errors import MiredoctlError, SupervisorUnreachable, one_line
from miredoctl.procs import alive, read_pid
from miredoctl.state import StatePaths

RPC_TIMEOUT = 60.0  # long enough for a stop that waits stopwaitsecs, short enough to not hang

# supervisord's process states: `getProcessInfo` gives both the code (`state`) and its word
# (`statename`); decisions use the codes, output shows supervisord's word unchanged.
RUNNING_NAME = getProcessStateDescription(ProcessStates.RUNNING)
STOPPED_NAME = getProcessStateDescription(ProcessStates.STOPPED)
# a process that is not running and that supervisord will not start by itself
STOPPED_FOR_GOOD = (ProcessStates.STOPPED, ProcessStates.EXITED, ProcessStates.FATAL)
# states in which supervisord holds or will restart a process (supervisor's RUNNING_STATES:
# RUNNING, BACKOFF, STARTING): a reload may signal it, a rollback must start it again
ACTIVE_STATES = RUNNING_STATES
# `wait_up` stops polling an instance once it is in one of these
SETTLED_STATES = (ProcessStates.RUNNING, *STOPPED_FOR_GOOD)
# what supervisord writes to its own log when a listener's buffer is full (supervisor.process)
OVERFLOW_MARK = "event buffer overflowed"
STARTED_MARK = "supervisord started with pid"
# a program's stop: stopwaitsecs (10) until SIGKILL, then the reap
STOP_DEADLINE = 15.0


def up_deadline(count: int) -> float:
    """How long `up` waits for `count` engines to reach RUNNING before it calls them failed.

    A fixed minute rolled back a few hundred engines that started together on two cores: each
    start costs its engine a fraction of a CPU second, so the wait grows by half a second per
    engine above the minute that one engine gets."""
    return 60.0 + 0.5 * max(0, count)


def daemon_deadline(programs: int) -> float:
    """How long a starting supervisord may take to answer on its socket while it shows no sign
    of life (see start_daemon)."""
    return 30.0 + 0.25 * max(0, programs)


def daemon_hard_deadline(programs: int) -> float:
    """The longest a starting supervisord that keeps working may take to answer: 2 s a
    program on top, for a host whose CPUs other work keeps busy too."""
    return daemon_deadline(programs) + 2.0 * max(0, programs)


def cpu_ticks(pid: int) -> int | None:
    """User + system clock ticks `pid` has run, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12]) if fields[0] not in ("Z", "X") else None


def lost_events(paths: StatePaths) -> dict[str, int]:
    """Events supervisord discarded since it last started, per listener (`_reaper`, ...).

    supervisord drops the oldest event of a full listener buffer and says so only in its own
    log; a dropped PROCESS_STATE event is a wrong restart count or FLAPPING verdict, or a dead
    engine's group not reaped, so `status` reports them. Only the current log file is read
    (5 MB at most), from its last start line on."""
    try:
        text = paths.supervisord_log.read_text(errors="replace")
    except OSError:
        return {}
    start = text.rfind(STARTED_MARK)
    counts: dict[str, int] = {}
    for line in text[max(start, 0):].splitlines():
        if OVERFLOW_MARK in line:
            words = line.split()
            pool = words[words.index("pool") + 1] if "pool" in words[:-1] else "?"
            counts[pool] = counts.get(pool, 0) + 1
    return counts


def state_of(info: dict[str, Any] | None) -> int | None:
    """The process state code of one `getProcessInfo` entry (None: not in supervisord)."""
    return None if info is None else int(info["state"])


class _TimeoutUnixConnection(http.client.HTTPConnection):
    """supervisor's unix connection has no timeout: a hung daemon would hang the CLI forever."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def identifier_for(paths: StatePaths) -> str:
    """Names this state folder; no '/' because supervisord puts it into AUTO log file names."""
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:16]
    return f"miredoctl-{digest}"


@dataclass
class ApplyResult:
    """What happened to one instance during up/down/restart/reload."""

    name: str
    action: str  # started, restarted, unchanged, stopped, signalled, not running, failed, ...
    ok: bool
    detail: str = ""


class SupervisordClient:
    """One connection to the fleet's supervisord (the proxy is not thread-safe: one per thread)."""

    def __init__(self, paths: StatePaths, timeout: float = RPC_TIMEOUT) -> None:
        self.paths = paths
        self.timeout = timeout
        self._proxy: Any = None

    # -- connection -------------------------------------------------------------------------
    @property
    def rpc(self) -> Any:
        if self._proxy is None:
            url = f"unix://{self.paths.socket}"
            transport = SupervisorTransport(None, None, url)
            path, timeout = str(self.paths.socket), self.timeout
            transport._get_connection = lambda: _TimeoutUnixConnection(path, timeout)
            self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return self._proxy

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy("transport").close()
            self._proxy = None

    def where(self) -> str:
        return f"unix://{self.paths.socket}"

    def running(self) -> bool:
        """True when *our* supervisord answers on the socket (identifier checked)."""
        try:
            self.paths.socket.stat()
        except FileNotFoundError:
            return False
        except PermissionError:
            raise _denied(self.paths.socket)
        try:
            ident = self.rpc.supervisor.getIdentification()
        except PermissionError:
            raise _denied(self.paths.socket)
        except (OSError, http.client.HTTPException, xmlrpc.client.Error):
            self.close()
            return False
        if ident != identifier_for(self.paths):
            raise MiredoctlError(f"{self.where()} is answered by another supervisord "
                                 f"(identifier {ident!r}); refusing to use it")
        return True

    def require(self) -> None:
        if not self.running():
            raise SupervisorUnreachable(f"supervisord for this fleet is not running (looked for "
                                        f"{self.where()}); start it with `miredoctl up`")

    def start_daemon(self) -> None:
        """Start supervisord for this fleet and wait until its socket answers.

        It spawns every program before it serves its socket, and hundreds of engines starting
        at once starve it of CPU: 300 relays on two cores kept it silent for over 30 s. So the
        wait grows with the number of programs (`daemon_deadline`)."""
        conf = self.paths.supervisord_conf
        cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              cwd=str(self.paths.root))
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            # its last line is "For help, use ... -h"; the reason is the "Error: " line
            why = next((m for m in msg if m.startswith("Error:")), msg[-1] if msg else None)
            raise MiredoctlError(f"supervisord did not start: {why or proc.returncode}"
                                 f" (log {self.paths.supervisord_log})")
        programs = sum(1 for _ in self.paths.programs.glob("*.conf"))
        # A supervisord that spawns hundreds of engines on a busy host answers late but keeps
        # running on the CPU: wait while its CPU time grows (up to the hard deadline); give up
        # after `daemon_deadline` without progress, or at once when it is gone.
        started = time.monotonic()
        hard = started + daemon_hard_deadline(programs)
        quiet_limit = daemon_deadline(programs)
        last_ticks, last_progress = None, started
        while True:
            if self.running():
                return
            now = time.monotonic()
            pid = self._daemon_pid()
            ticks = cpu_ticks(pid) if pid else None
            if pid and ticks is None:
                raise SupervisorUnreachable(f"supervisord (pid {pid}) exited before it answered "
                                            f"on {self.where()} (log {self.paths.supervisord_log})")
            if ticks is not None and ticks != last_ticks:
                last_ticks, last_progress = ticks, now
            if now >= hard or now - last_progress >= quiet_limit:
                break
            time.sleep(0.2)
        raise SupervisorUnreachable(f"supervisord started but {self.where()} does not answer "
                                    f"after {time.monotonic() - started:.0f} s "
                                    f"(log {self.paths.supervisord_log})")

    def _daemon_pid(self) -> int | None:
        return read_pid(self.paths.supervisord_pid)  # None: not written yet

    def shutdown(self) -> None:
        """Stop supervisord (it stops every engine first) and wait until its pid is gone."""
        pid = self.rpc.supervisor.getPID()
        self.rpc.supervisor.shutdown()
        self.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)

    # -- process view -----------------------------------------------------------------------
    def processes(self) -> dict[str, dict[str, Any]]:
        """Instances only: miredoctl's own helpers (names starting with '_') are left out."""
        return {p["name"]: p for p in self.rpc.supervisor.getAllProcessInfo()
                if not p["name"].startswith("_")}

    def reread(self) -> tuple[list[str], list[str], list[str]]:
        try:
            added, changed, removed = self.rpc.supervisor.reloadConfig()[0]
        except xmlrpc.client.Fault as exc:
            raise MiredoctlError(f"supervisord cannot read its configuration: {exc.faultString}")
        return added, changed, removed

    def add(self, name: str) -> None:
        try:
            self.rpc.supervisor.addProcessGroup(name)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_ADDED:
                raise

    def remove(self, name: str) -> None:
        self.stop(name)
        try:
            self.rpc.supervisor.removeProcessGroup(name)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.BAD_NAME:
                raise

    def stop(self, name: str) -> bool:
        """Stop and wait; False when it was not running (idempotent down)."""
        try:
            self.rpc.supervisor.stopProcess(name, True)
            return True
        except xmlrpc.client.Fault as exc:
            if exc.faultCode in (Faults.NOT_RUNNING, Faults.BAD_NAME):
                return False
            raise

    def stop_many(self, names: list[str]) -> dict[str, bool]:
        """Stop several programs at once and wait until all are stopped; name -> False when it
        was not running (idempotent down).

        `stopProcess(name, wait=True)` returns at the earliest on supervisord's next tick (its
        main loop sleeps up to a second), so stopping instances one after the other cost about
        0.7 s each (77 s for 100). Here every stop signal goes out in one multicall and the
        processes are then polled together: the engines stop in parallel."""
        if not names:
            return {}
        calls = [{"methodName": "supervisor.stopProcess", "params": [n, False]} for n in names]
        answers = self.rpc.system.multicall(calls)
        result: dict[str, bool] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, dict) and "faultCode" in answer:
                if answer["faultCode"] not in (Faults.NOT_RUNNING, Faults.BAD_NAME):
                    raise xmlrpc.client.Fault(answer["faultCode"], answer["faultString"])
                result[name] = False
            else:
                result[name] = True
        pending = {n for n, sent in result.items() if sent}
        deadline = time.monotonic() + STOP_DEADLINE
        while pending and time.monotonic() < deadline:
            procs = self.processes()
            pending = {n for n in pending if n in procs
                       and state_of(procs[n]) not in (*STOPPED_FOR_GOOD, ProcessStates.UNKNOWN)}
            if pending:
                time.sleep(0.1)
        if pending:
            raise MiredoctlError(f"supervisord did not stop {', '.join(sorted(pending))} within "
                                 f"{STOP_DEADLINE:.0f} s")
        return result

    def forget(self, names: list[str]) -> None:
        """Remove stopped programs from the running supervisord (its files stay as they are),
        in one multicall; right before a shutdown.

        supervisord's shutdown walks its process groups one per turn of its main loop, which
        sleeps up to a second when nothing happens: 100 stopped instances still cost it about a
        minute. Without them only miredoctl's own listeners are left to stop. A program that is
        running again by now (STILL_RUNNING) is left to the shutdown."""
        if names:
            self.rpc.system.multicall([{"methodName": "supervisor.removeProcessGroup",
                                        "params": [n]} for n in names])

    def start(self, name: str) -> None:
        """Ask supervisord to start without waiting: `wait_up` polls all instances together."""
        try:
            self.rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_STARTED:
                raise MiredoctlError(f"{name}: {exc.faultString}")

    def signal(self, name: str, sig: str) -> ApplyResult:
        try:
            self.rpc.supervisor.signalProcess(name, sig)
            return ApplyResult(name, "signalled", True, f"SIG{sig}")
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == Faults.NOT_RUNNING:
                return ApplyResult(name, "not running", False)
            return ApplyResult(name, "failed", False, exc.faultString)

    def wait_up(self, names: list[str], timeout: float | None = None
                ) -> dict[str, dict[str, Any]]:
        """Poll until each instance is RUNNING (startsecs passed) or has given up (FATAL);
        by default for as long as `up_deadline` gives that many engines."""
        deadline = time.monotonic() + (up_deadline(len(names)) if timeout is None else timeout)
        pending = set(names)
        infos: dict[str, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            procs = self.processes()
            for name in list(pending):
                info = procs.get(name)
                if info is None:
                    continue
                infos[name] = info
                if state_of(info) in SETTLED_STATES:
                    pending.discard(name)
            if pending:
                time.sleep(0.2)
        return infos

    def tail_log(self, name: str, length: int = 2000) -> str:
        try:
            text, _offset, _overflow = self.rpc.supervisor.tailProcessStdoutLog(name, 0, length)
            return text
        except (xmlrpc.client.Fault, OSError):
            return ""


def parsed_groups(conf: Path) -> list[str]:
    """The process groups supervisord would run from `conf` and the files it includes, read by
    supervisord's own parser (the code `reloadConfig` and a fresh start run).

    `up` calls this before supervisord re-reads anything, so a configuration supervisord would
    refuse (a CANT_REREAD) is found while every file can still be put back. Raises
    MiredoctlError with supervisord's reason in one line.
    """
    options = ServerOptions()
    options.configfile = str(conf)
    try:
        options.process_config_file(do_usage=False)
    except (ValueError, OSError) as exc:
        raise MiredoctlError(f"supervisord's parser rejects the new configuration: "
                             f"{one_line(str(exc))}")
    return [group.name for group in options.configroot.supervisord.process_group_configs]


def last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def read_file(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _denied(path: Path) -> MiredoctlError:
    """One line for a user who may not reach the fleet's supervisord (miredoctl/access.py)."""
    return MiredoctlError(f"permission denied on {path}: the fleet's supervisord socket is "
                          f"for root and the {access.group_name()} group; run miredoctl as root "
                          "or as a member of that group")
