"""Thin wrappers around `ip netns`, `ip -n` and `sysctl` that build and remove the lab.

The lab drives iproute2 and nftables through subprocess on purpose: these are the tools a
person debugging the lab by hand uses, so every step the code takes can be replayed in a
shell.  (The engine itself uses pyroute2; the lab is not on its hot path.)

Nothing here ever touches the root network namespace: every helper takes a namespace name
and runs `ip -n NS ...` or `ip netns exec NS ...`.  The two helpers the manager needs in
production (`exec_argv`, `alive`) live in `miredoctl.procs` and are re-exported here, so the lab
and the manager build the same command lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from miredoctl.procs import alive, exec_argv

__all__ = ["NetnsError", "add", "alive", "delete", "exec_argv", "exists", "list_namespaces",
           "pids", "run", "stop_pids", "sysctl"]


class NetnsError(RuntimeError):
    """A namespace command failed; `str()` is one line naming the command and its error."""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command, text mode, output captured; raise NetnsError with one line on failure."""
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                            timeout=timeout, check=False)
    except FileNotFoundError:
        raise NetnsError(f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{' '.join(argv)}: timed out after {timeout:g}s")
    if check and cp.returncode != 0:
        err = _first_line(cp.stderr) or _first_line(cp.stdout) or f"exit status {cp.returncode}"
        raise NetnsError(f"{' '.join(argv)}: {err}")
    return cp


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (the files in /run/netns)."""
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", ns))


def add(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def pids(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is `ns` (what `ip netns pids` sees)."""
    if not exists(ns):
        return []
    cp = run(["ip", "netns", "pids", ns], check=False)
    return [int(tok) for tok in cp.stdout.split() if tok.isdigit()]


def stop_pids(pid_list: Sequence[int], grace: float = 3.0) -> list[int]:
    """SIGTERM each PID, wait up to `grace` seconds, SIGKILL what is left; return killed ones.

    Only called with PIDs found inside the lab's own namespaces, so it can never hit a
    process that the lab (or a test using it) did not start.
    """
    for pid in pid_list:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = list(pid_list)
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.02)
    killed = []
    for pid in left:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def delete(ns: str, grace: float = 3.0) -> list[int]:
    """Stop everything still running in `ns` (by PID), then delete it; return stopped PIDs."""
    if not exists(ns):
        return []
    found = pids(ns)
    if found:
        stop_pids(found, grace)
    run(["ip", "netns", "del", ns])
    return found


def sysctl(ns: str, *settings: str) -> None:
    """Set `key=value` sysctls inside `ns` (one process for all of them)."""
    run(exec_argv(ns, ["sysctl", "-qw", *settings]))
