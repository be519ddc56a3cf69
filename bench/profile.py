"""Where our relay's time goes: the cProfile statistics of one profiled block, as text.

cProfile slows the interpreter down, so the profiled block is never part of the comparison;
its value is the ranking of functions by own time, which shows what to make cheaper.
"""

from __future__ import annotations

import io
import pstats
from pathlib import Path


def profile_text(prof: Path, res: dict, top: int = 25) -> str:
    """Top functions by own time (tottime), plus what the profiled run achieved."""
    head = f"Profiled block: {res.get('status')}"
    rows = [r for r in res.get("iperf", []) if "error" not in r]
    if rows:
        r = rows[0]
        head += (f"; under cProfile: {r['mbit_s']:.1f} Mbit/s at relay CPU "
                 f"{r['relay_cpu_pct']:.1f} %")
    if not prof.exists():
        return head + ("\n\nNo profile was written: the relay must exit normally on SIGTERM "
                       "for cProfile to dump its statistics.")
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    body = "\n".join(line for line in buf.getvalue().splitlines() if line.strip())
    return f"{head}\n\n```\n{body}\n```"
