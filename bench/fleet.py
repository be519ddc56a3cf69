"""miredoctl at fleet scale: N relays in one namespace, on our engine and on Debian's miredo.

`python -m bench.fleet --instances 100` builds a throwaway fleet folder (a git repository, as
an operator's is) of N relays in one network namespace, then times each operation of issue 14
once per implementation, alternating (ours, miredo, ours, miredo, ... with `--rounds`), and
prints the table with the ratio ours / miredo. Every fleet it starts is stopped and every
namespace it creates deleted, also on failure. Needs root, supervisord (the project's
dependency) and, for the miredo column, Debian's miredo.

The table's rows:
* `validate`, a no-op `up`, `reload --all` (signals every engine), `status`, `status --json`
  on the running fleet;
* `up --all` from nothing followed by `wait`, and `down --all`;
* `up` of one changed instance (an edited `mtu`), which restarts only that one;
* lost events: `event buffer overflowed` lines supervisord logged during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FIRST_PORT = 40000
OVERFLOW = "event buffer overflowed"
STARTED = "supervisord started with pid"


def make_relay_fleet(dest: Path, count: int, netns: str, engine: str = "teredo-engine",
                     git: bool = True) -> Path:
    """`count` relays named r000, r001, ... in namespace `netns`: interface `trlyN`, UDP port
    40000 + N (two relays of one namespace may share neither). A git repository by default,
    so the rendered headers cost what they cost an operator's fleet."""
    dest.mkdir(parents=True)
    (dest / "defaults.yaml").write_text(
        "allow_documentation_addresses: true\n"
        f"all:\n  engine: {engine}\n"
        f"roles:\n  relay:\n    relay_type: cone\n    mtu: 1280\n    netns: {netns}\n")
    width = max(3, len(str(count - 1)))
    for i in range(count):
        (dest / f"r{i:0{width}d}.yaml").write_text(
            f"role: relay\ninterface: trly{i}\nbind_port: {FIRST_PORT + i}\n")
    if git:
        for argv in (["init", "-q"], ["add", "."],
                     ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit",
                      "-qm", f"{count} relays"]):
            subprocess.run(["git", "-C", str(dest), *argv], check=True, capture_output=True)
    return dest


def lost_event_lines(state: Path) -> int:
    """Overflow lines in supervisord's log since its last start (the fleet's `status` reports
    the same count); 0 when there is no log."""
    try:
        text = (state / "logs" / "supervisord.log").read_text(errors="replace")
    except OSError:
        return 0
    return text[max(text.rfind(STARTED), 0):].count(OVERFLOW)


@dataclass
class Fleet:
    """One implementation's fleet folder and state folder, driven through the CLI."""

    engine: str
    folder: Path
    state: Path
    lost: int = 0

    def run(self, *args: str, check: bool = True, timeout: float = 1800
            ) -> subprocess.CompletedProcess:
        env = {**os.environ, "MIREDOCTL_FLEET": str(self.folder),
               "MIREDOCTL_STATE": str(self.state)}
        proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode not in (0, 3):
            raise RuntimeError(f"miredoctl {' '.join(args)} ({self.engine}): exit "
                               f"{proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def timed(self, *args: str) -> float:
        start = time.perf_counter()
        self.run(*args)
        return time.perf_counter() - start

    def note_lost(self) -> None:
        self.lost += lost_event_lines(self.state)


def _cold_up(f: Fleet) -> float:
    start = time.perf_counter()
    f.run("up", "--all")
    f.run("wait", "--timeout", "900")
    return time.perf_counter() - start


def _one_changed(f: Fleet) -> float:
    first = sorted(f.folder.glob("r*.yaml"))[0]
    text = first.read_text()
    first.write_text(text + "mtu: 1400\n")
    try:
        return f.timed("up")
    finally:
        first.write_text(text)


def _down(f: Fleet) -> float:
    f.note_lost()  # supervisord's log of the start-up burst, before it stops
    took = f.timed("down", "--all")
    f.note_lost()
    return took


ROWS: list[tuple[str, Callable[[Fleet], float]]] = [
    ("up --all + wait (cold)", _cold_up),
    ("validate", lambda f: f.timed("validate")),
    ("up, nothing changed", lambda f: f.timed("up")),
    ("up, one instance changed", _one_changed),
    ("reload --all", lambda f: f.timed("reload", "--all")),
    ("status", lambda f: f.timed("status")),
    ("status --json", lambda f: f.timed("status", "--json")),
    ("down --all", _down),
]


@dataclass
class Table:
    instances: int
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)

    def add(self, row: str, engine: str, seconds: float) -> None:
        self.samples.setdefault(row, {}).setdefault(engine, []).append(seconds)

    def text(self, engines: list[str]) -> str:
        head = f"| operation (N={self.instances}) | " + " | ".join(engines)
        lines = [head + (" | ours / miredo |" if len(engines) == 2 else " |"),
                 "|---" * (len(engines) + 1 + (len(engines) == 2)) + "|"]
        for row, _fn in ROWS:
            med = {e: statistics.median(self.samples.get(row, {}).get(e, [float("nan")]))
                   for e in engines}
            cells = [f"{med[e]:.2f} s" for e in engines]
            if len(engines) == 2:
                cells.append(f"{med[engines[0]] / med[engines[1]]:.2f}" if med[engines[1]]
                             else "-")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("| lost supervisord events | "
                     + " | ".join(str(self.lost.get(e, 0)) for e in engines)
                     + (" | |" if len(engines) == 2 else " |"))
        return "\n".join(lines)


def _namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def _cleanup(fleets: list[Fleet], ns: str) -> None:
    for f in fleets:
        try:
            f.run("down", "--all", check=False, timeout=600)
        except (subprocess.TimeoutExpired, OSError):
            pass
        pidfile = f.state / "supervisord.pid"
        if pidfile.exists():  # down failed: stop the supervisord this run started, by pid
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def run(instances: int, engines: list[str], rounds: int) -> Table:
    table = Table(instances)
    ns = f"bfl{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    fleets = [Fleet(e, make_relay_fleet(work / f"fleet-{e}", instances, ns, e),
                    work / f"state-{e}") for e in engines]
    _namespace(ns)
    try:
        for _round in range(rounds):
            for f in fleets:  # alternating: each implementation's run sees the same host load
                for row, fn in ROWS:
                    table.add(row, f.engine, fn(f))
                    print(f"  {f.engine:14} {row:26} {table.samples[row][f.engine][-1]:7.2f} s",
                          file=sys.stderr, flush=True)
        table.lost = {f.engine: f.lost for f in fleets}
    finally:
        _cleanup(fleets, ns)
        shutil.rmtree(work, ignore_errors=True)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--engines", default="teredo-engine,miredo",
                   help="comma-separated, in column order (default: teredo-engine,miredo)")
    p.add_argument("--output", type=Path, help="also write the table (and the raw samples as "
                                              "JSON next to it) to this file")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.fleet: needs root (namespaces, TUN devices)", file=sys.stderr)
        return 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    table = run(args.instances, engines, args.rounds)
    text = table.text(engines)
    print(text)
    if args.output:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip() or "?"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.output.write_text(f"`python -m bench.fleet --instances {args.instances} --rounds "
                               f"{args.rounds}`, {stamp}, commit {commit}\n\n{text}\n")
        args.output.with_suffix(".json").write_text(json.dumps(
            {"instances": args.instances, "rounds": args.rounds, "samples": table.samples,
             "lost_events": table.lost}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
