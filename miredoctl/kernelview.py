"""What the kernel shows of engines that have no status socket (Debian's miredo), read once per
`status` call instead of once per instance.

Why a snapshot: an `engine: miredo` row needs the interface's counters and addresses, the UDP
sockets the engine's process tree holds, and that tree itself. Asked per instance, that is two
`ip` runs, one `ss` run and a walk of all of `/proc` each: about 40 ms an instance, 4 s for a
fleet of 100 (docs/performance.md, fleet table). One snapshot asks each namespace once (two
`ip` and one `ss` run) and walks `/proc` once, then answers every instance from memory.

Every table is filled on first use and kept for the life of the snapshot (one `status`,
`metrics` scrape or `show`); a snapshot is safe to share between the threads of a scrape.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from miredoctl.procs import exec_argv

COMMAND_TIMEOUT = 10.0
T = TypeVar("T")


class KernelError(OSError):
    """A kernel view that could not be read (e.g. the namespace is gone); one line."""


def _ip_json(netns: str | None, *args: str) -> Any:
    cmd = ["ip", *(["-n", netns] if netns else []), "-j", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if proc.returncode != 0:
        raise KernelError(proc.stderr.strip() or f"{' '.join(cmd)} failed")
    return json.loads(proc.stdout or "[]")


def _udp_sockets(netns: str | None) -> list[tuple[str, frozenset[int]]]:
    cmd = ["ss", "-H", "-u", "-a", "-n", "-p"]
    if netns:
        cmd = exec_argv(netns, cmd)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    out = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        owners = frozenset(int(p) for p in re.findall(r"pid=(\d+)", line))
        if owners and len(parts) >= 4:
            out.append((parts[3], owners))
    return out


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


class KernelView:
    """Links, IPv6 addresses and UDP sockets per namespace, and the process tree, each read once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str | None], Any] = {}

    def _once(self, key: tuple[str, str | None], read: Callable[[], T]) -> T:
        # one reader per table; the others wait for its result (or its error) instead of
        # running the same `ip`/`ss` again
        with self._lock:
            entry = self._tables.get(key)
            if entry is None:
                entry = self._tables[key] = [threading.Event(), None, None]
                mine = True
            else:
                mine = False
        done, _value, _error = entry
        if mine:
            try:
                entry[1] = read()
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                entry[2] = KernelError(str(exc) or type(exc).__name__)
            except BaseException as exc:
                # anything else is a bug: every waiter must see it too, not an empty table
                entry[2] = exc
                raise
            finally:
                done.set()
        else:
            done.wait()
        if entry[2] is not None:
            raise entry[2]
        return entry[1]

    def link(self, netns: str | None, ifname: str) -> dict[str, Any]:
        """`ip -j -s link` of one interface; KernelError when it does not exist."""
        links = self._once(("links", netns), lambda: {
            ln.get("ifname"): ln for ln in _ip_json(netns, "-s", "link", "show")})
        try:
            return links[ifname]
        except KeyError:
            raise KernelError(f'Device "{ifname}" does not exist.') from None

    def ipv6_addresses(self, netns: str | None, ifname: str) -> list[dict[str, Any]]:
        """The `addr_info` entries of one interface's IPv6 addresses."""
        addrs = self._once(("addrs6", netns), lambda: {
            a.get("ifname"): a.get("addr_info", []) for a in _ip_json(netns, "-6", "addr", "show")})
        return list(addrs.get(ifname, []))

    def descendants(self, pid: int) -> set[int]:
        """pid and every process below it (miredo forks a worker and a privileged helper)."""
        children = self._once(("children", None), _children_by_parent)
        out: set[int] = set()
        todo = [pid]
        while todo:
            p = todo.pop()
            if p in out:
                continue
            out.add(p)
            todo.extend(children.get(p, []))
        return out

    def bound_udp(self, netns: str | None, pid: int) -> list[str]:
        """UDP sockets held by the process tree of `pid`, as `ip:port`."""
        sockets = self._once(("udp", netns), lambda: _udp_sockets(netns))
        pids = self.descendants(pid)
        return sorted({local for local, owners in sockets if owners & pids})
