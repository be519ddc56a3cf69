"""The engine's resident memory: idle (the running relay) and with a large peer table.

The large-table figure is taken in a fresh interpreter (`python -m bench.peers_rss N`) so that
nothing else the benchmark loaded is counted: RSS after importing the peer table module, and
after filling it with N peers. miredo's table cannot be filled like this from outside (it would
take N real Teredo peers talking to it), so it has no such figure.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable


def peers_module_present() -> bool:
    try:
        return importlib.util.find_spec("engine.proto.peers") is not None
    except ModuleNotFoundError:
        return False


def engine_memory(n: int, ours: dict | None, log: Callable[[str], None]) -> str:
    lines = []
    idle = (ours or {}).get("memory", {}).get("relay_idle")
    if idle:
        lines.append(f"- our relay, idle after start: RSS {idle['rss_kib']} KiB "
                     "(whole process tree, from /proc/PID/status)")
    if not peers_module_present():
        lines.append(f"- with {n} peers: not measured, engine.proto.peers does not exist yet")
        return "\n".join(lines)
    res = subprocess.run([sys.executable, "-m", "bench.peers_rss", str(n)],
                         capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or ["no output"])[-1]
        lines.append(f"- with {n} peers: FAILED: {msg}")
        log(f"peer-table memory failed: {msg}")
        return "\n".join(lines)
    d = json.loads(res.stdout)
    lines.append(
        f"- fresh interpreter with engine.proto.peers imported: RSS {d['before_kib']} KiB; "
        f"with {d['peers']} peers: {d['after_kib']} KiB "
        f"(+{d['after_kib'] - d['before_kib']} KiB, {d['bytes_per_peer']:.0f} bytes per peer; "
        f"built in {d['build_s']:.2f} s)")
    lines.append("- miredo: no comparable figure (its peer table can only be filled by real "
                 "peers; its idle relay RSS is in the table above)")
    return "\n".join(lines)
