"""Processes the benchmark starts inside lab namespaces, and what /proc says about them.

Every process is started in its own session, so that a Ctrl-C in the terminal reaches only the
benchmark, which then stops its children itself, in reverse order, by PID (SIGTERM, a grace
period, then SIGKILL). `ip netns exec` execs the command without forking, so the PID we hold
is the daemon's own PID and the root of its process tree (miredo forks a worker, and a client
also runs miredo-privproc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Proc:
    """One started process: its name (for logs and errors), Popen object and log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 5) -> str:
        """The end of the log, for error messages that must say why a daemon failed."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@dataclass
class ProcessGroup:
    """The processes of one benchmark run; `stop_all` is safe to call any number of times."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, ns: str, argv: Sequence[str], env: dict | None = None) -> Proc:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        """Stop one process by PID; returns its exit status (None if it had to be killed)."""
        if proc.alive():
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.popen.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception:  # cleanup must go on with the others
                pass


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """PIDs of `root` and all its descendants, found through the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_split(root: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks, summed over the live process tree under `root`.

    The split matters for a userspace relay: user time is the interpreter or the C code,
    system time is the syscalls and the kernel's UDP/TUN work done on the relay's behalf.
    """
    user = system = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return user, system


def tree_cpu_ticks(root: int) -> int:
    """utime+stime, in clock ticks, summed over the live process tree under `root`."""
    return sum(tree_cpu_split(root))


def tree_memory_kib(root: int) -> dict[str, int]:
    """Memory of the process tree in KiB: RSS and peak RSS (VmRSS, VmHWM: shared pages count
    once per process, so a forked tree looks bigger than it is), PSS (each shared page split
    among its sharers: what the tree really costs the machine) and USS (pages no other process
    maps: what stopping the tree would give back)."""
    out = {"rss_kib": 0, "hwm_kib": 0, "pss_kib": 0, "uss_kib": 0}
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kib"] += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                out["hwm_kib"] += int(line.split()[1])
        pss, uss = smaps_rollup_kib(pid)
        out["pss_kib"] += pss
        out["uss_kib"] += uss
    return out


def smaps_rollup_kib(pid: int) -> tuple[int, int]:
    """(PSS, USS) of one process from /proc/PID/smaps_rollup; (0, 0) if it is gone."""
    pss = uss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Pss":
            pss = int(rest.split()[0])
        elif key in ("Private_Clean", "Private_Dirty"):
            uss += int(rest.split()[0])
    return pss, uss


def wait_until(predicate, timeout: float, interval: float = 0.005) -> float | None:
    """Poll `predicate` until true; returns the seconds it took, or None on timeout."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(interval)
