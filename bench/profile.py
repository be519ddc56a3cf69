"""Where our relay's time goes: py-spy samples of the engine's worker during one extra run.

The engine forks an unprivileged worker that runs the hot loop and leaves with `os._exit`, so
an in-process profiler (cProfile in the parent) would see nothing of the forwarding. py-spy
samples the worker from outside (`--idle` keeps samples taken inside blocking syscalls, which
for a relay are real work: recvfrom, sendto, the TUN read and write; `--nonblocking` reads the
stacks without stopping the worker, so the profiled run keeps its speed). The profiled run is
an extra run outside the comparison all the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.procs import process_tree

RATE = 250  # samples per second


def py_spy() -> str | None:
    """py-spy from PATH or next to the running interpreter (the project's venv)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def worker_pid(root: int) -> int:
    """The engine's worker: the deepest process of the relay's tree (else the root itself)."""
    tree = process_tree(root)
    return tree[-1] if len(tree) > 1 else root


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", f"{seconds:.0f}",
                             "--rate", str(RATE), "--idle", "--nonblocking", "--format", "raw",
                             "--output",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _frames(stack: str) -> list[str]:
    """`a (file.py:12);b (other.py:3)` -> ["a (file.py)", "b (other.py)"] (lines dropped)."""
    out = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        out.append(f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name)
    return out


def summarize(raw: str, top: int = 20) -> dict:
    """Own-time (leaf) and inclusive shares per function from py-spy's raw (collapsed) format."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        total += n
        own[frames[-1]] += n
        own_lines[stack.split(";")[-1]] += n
        for f in set(frames):
            incl[f] += n

    def shares(c: Counter[str], skip_roots: bool = False) -> list[tuple[str, float]]:
        # frames on every sample (main, run loop) say nothing about where time goes
        items = [(f, n) for f, n in c.most_common() if not (skip_roots and n == total)]
        return [(f, 100.0 * n / total) for f, n in items[:top]]

    if not total:
        return {"samples": 0, "own": [], "own_lines": [], "inclusive": []}
    return {"samples": total, "own": shares(own), "own_lines": shares(own_lines),
            "inclusive": shares(incl, skip_roots=True)}


def profile_text(summary: dict | None, row: dict | None, note: str = "") -> str:
    """The report section: what the profiled run achieved, and the two rankings."""
    lines = []
    if row and "mbit_s" in row:
        lines.append(f"Profiled run (TCP v6 host -> client, extra run, not in the table): "
                     f"{row['mbit_s']:.1f} Mbit/s, relay CPU {row['relay_cpu_pct']:.1f} % "
                     f"(user {row.get('relay_user_pct', 0):.1f} %, system "
                     f"{row.get('relay_sys_pct', 0):.1f} %).")
    if note:
        lines.append(note)
    if not summary or not summary["samples"]:
        lines.append("No samples.")
        return "\n".join(lines)
    lines.append(f"py-spy, {summary['samples']} samples of the worker at {RATE} Hz, idle "
                 "included (a sample in `select`/`poll` is the loop waiting for work).")
    lines += ["", "| own time % | function (file) |", "|---|---|"]
    lines += [f"| {pct:.1f} | `{f}` |" for f, pct in summary["own"]]
    lines += ["", "| own time % | source line (a C call such as sendto is charged to the line "
              "that makes it) |", "|---|---|"]
    lines += [f"| {pct:.1f} | `{f}` |" for f, pct in summary.get("own_lines", [])[:10]]
    lines += ["", "| inclusive % | function (file), frames present in every sample left out |",
              "|---|---|"]
    lines += [f"| {pct:.1f} | `{f}` |" for f, pct in summary["inclusive"]]
    return "\n".join(lines)
