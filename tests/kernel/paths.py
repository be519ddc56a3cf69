"""The eight ping paths of the reference miredo lab, as data, and a runner for them.

Order matters: the first paths hit "cold" state (no peer entry yet in relay or client, so
the bubbles and the connectivity test through the server happen), the later ones reuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from teredolab.topology import NetnsLab
from tests.kernel.harness import HarnessError, PingResult, ping

NATIVE = "v6"  # destination role meaning "the native IPv6 host"; others are Teredo clients


@dataclass(frozen=True)
class PingPath:
    """One path: ping from role `src` to `dst` (a client role = its Teredo address, or
    NATIVE = the native IPv6 host)."""

    name: str
    src: str
    dst: str
    size: int
    state: str  # "cold" or "warm"
    prime: bool = False  # send one unmeasured packet first (see the 1400-byte path)

    @property
    def roles(self) -> set[str]:
        return {self.src, self.dst}


PATHS: tuple[PingPath, ...] = (
    PingPath("v6 host -> cli2 (relay bubbles via server)", NATIVE, "cli2", 56, "cold"),
    PingPath("cli -> v6 host (ping test via server)", "cli", NATIVE, 56, "cold"),
    PingPath("v6 host -> cli (via relay)", NATIVE, "cli", 56, "warm"),
    # 1400 bytes exceed the 1280-byte Teredo MTU: the first such packet is dropped by the
    # relay's kernel with ICMPv6 Packet Too Big; later ones arrive as fragments.
    PingPath("v6 host -> cli, 1400 bytes (after PTB: fragments)", NATIVE, "cli", 1400, "warm",
             prime=True),
    PingPath("cli -> v6 host, 1400 bytes (client fragments)", "cli", NATIVE, 1400, "warm"),
    PingPath("cli -> cli2 (client-to-client, hole punching)", "cli", "cli2", 56, "cold"),
    PingPath("cli2 -> cli (client-to-client)", "cli2", "cli", 56, "warm"),
    PingPath("cli2 -> v6 host (via relay)", "cli2", NATIVE, 56, "warm"),
)


@dataclass(frozen=True)
class PathResult:
    path: PingPath
    destination: str
    result: PingResult

    @property
    def verdict(self) -> str:
        return self.result.verdict


def destination(lab: NetnsLab, path: PingPath, addresses: Mapping[str, str]) -> str:
    if path.dst == NATIVE:
        return lab.spec.v6_host
    if path.dst not in addresses:
        raise HarnessError(f"path {path.name!r}: no Teredo address known for {path.dst}")
    return addresses[path.dst]


def run_path_list(lab: NetnsLab, paths: Iterable[PingPath], addresses: Mapping[str, str],
                  count: int = 5, interval: float = 0.2, wait: float = 3.0) -> list[PathResult]:
    """Ping `paths` in the given order (order makes cold/warm); one row per path.

    The first ping of a cold path is the cold result, as in the reference lab's
    run-miredo.sh: it is never retried; `wait` is generous because that first echo waits in
    the sender's queue until the bubbles or the connectivity test through the server are
    answered."""
    rows = []
    for path in paths:
        dst = destination(lab, path, addresses)
        if path.prime:
            ping(lab, path.src, dst, count=1, size=path.size, wait=1.0)
        rows.append(PathResult(path, dst, ping(lab, path.src, dst, count=count,
                                               size=path.size, interval=interval, wait=wait)))
    return rows


def run_paths(lab: NetnsLab, addresses: Mapping[str, str], count: int = 5,
              interval: float = 0.2, wait: float = 3.0) -> list[PathResult]:
    """Ping every path of PATHS this lab can carry, in order; returns one row per path.

    `addresses` maps client roles to their Teredo addresses.  Paths that need the second
    client are left out of a lab built without it."""
    present = set(lab.spec.roles())
    return run_path_list(lab, [p for p in PATHS if p.roles <= present], addresses,
                         count, interval, wait)


def format_table(rows: list[PathResult], title: str = "") -> str:
    """A readable table: path, state, verdict, replies, RTT min/avg/max."""
    width = max([len(r.path.name) for r in rows] + [4])
    lines = [title] if title else []
    lines.append(f"{'path':<{width}}  state  result   replies  RTT min/avg/max ms")
    for r in rows:
        res = r.result
        rtt = (res.error or "-" if res.avg is None
               else f"{res.min:.3f}/{res.avg:.3f}/{res.max:.3f}")
        lines.append(f"{r.path.name:<{width}}  {r.path.state:<5}  {r.verdict:<7}  "
                     f"{res.received}/{res.sent:<5}  {rtt}")
    return "\n".join(lines)


def print_table(rows: list[PathResult], title: str = "") -> None:
    print("\n" + format_table(rows, title), flush=True)
