"""`python -m bench`: ours against Debian's miredo in the relay role, in one run.

Defaults: both relays (miredo first, then ours), medians of 3 runs of 10 s, 5 qualification
runs. `--quick`: 1 run of 3 s, 3 qualification runs. Results go to bench/results/ as
bench-<UTC timestamp>.md and .json, and the table is printed.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.daemons import IMPLS
from bench.measure import IPERF_TESTS
from bench.memory import engine_memory
from bench.profile import profile_text
from bench.report import fmt, machine_meta, summarize, write
from bench.runner import Settings, run_all

RESULTS = Path(__file__).resolve().parent / "results"


def _impl_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in IMPLS]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated list of {', '.join(IMPLS)}")
    return list(dict.fromkeys(items))


def _test_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in IPERF_TESTS]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated list of {', '.join(IPERF_TESTS)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relay", type=_impl_list, default=["miredo", "ours"],
                   help="relay implementations to measure, in order (default: miredo,ours)")
    p.add_argument("--client", choices=IMPLS, default="miredo",
                   help="client used for the traffic tests, the same for every relay "
                        "(default: miredo)")
    p.add_argument("--server", choices=IMPLS, default="miredo",
                   help="Teredo server implementation (default: miredo)")
    p.add_argument("--qual-client", choices=("same", *IMPLS), default="same",
                   help="client whose qualification is timed in each block; 'same' = the "
                        "block's implementation (default)")
    p.add_argument("--quick", action="store_true", help="1 run of 3 s, 3 qualification runs")
    p.add_argument("--runs", type=int, help="runs per test (default 3)")
    p.add_argument("--duration", type=float, help="seconds per iperf3 run (default 10)")
    p.add_argument("--qual-runs", type=int, help="qualification runs (default 5)")
    p.add_argument("--tests", type=_test_list, default=list(IPERF_TESTS),
                   help="iperf3 tests (default: " + ",".join(IPERF_TESTS) + ")")
    p.add_argument("--peers", type=int, default=100_000,
                   help="peer-table size for the engine memory measure (default 100000)")
    p.add_argument("--profile", action="store_true",
                   help="one extra TCP v6 -> client run with py-spy sampling our relay's worker; "
                        "report where its time goes (the run is not part of the comparison)")
    p.add_argument("--fleet", type=int, default=20,
                   help="idle relays per implementation for the fleet PSS row (default 20; "
                        "0: no fleet row)")
    p.add_argument("--prefix", default="", help="namespace-name prefix (default: bn<pid>)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the run directory (configs, daemon logs, raw iperf3/ping output)")
    a = p.parse_args(argv)
    quick = a.quick
    a.runs = a.runs or (1 if quick else 3)
    a.duration = a.duration or (3.0 if quick else 10.0)
    a.qual_runs = a.qual_runs or (3 if quick else 5)
    return a


def _terminate(signum, frame):  # signal handler signature
    raise KeyboardInterrupt


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def require_root_and_tools(a: argparse.Namespace) -> None:
    """Root and the commands the selected implementations need, before any lab is built."""
    if os.geteuid() != 0:
        sys.exit("python -m bench: needs root (network namespaces, TUN)")
    needed = ["ip", "nft", "iperf3", "ping", "ss"]
    if "miredo" in (*a.relay, a.client, a.server, a.qual_client):
        needed += ["miredo"]
    if a.server == "miredo":
        needed += ["miredo-server"]
    missing = [c for c in needed if shutil.which(c) is None]
    if missing:
        sys.exit(f"python -m bench: missing commands: {', '.join(missing)} (make deps)")


def compile_engine() -> None:
    """Write the engine's bytecode first, as an installed package has it: with
    PYTHONDONTWRITEBYTECODE set (or a read-only tree) every engine start would compile ~40
    modules from source, which doubled the measured qualification time (207 -> 113 ms).

    ``force``: compileall keeps a bytecode file whose recorded modification time matches the
    source's, to the second, but the interpreter also compares the size, so a module edited
    twice within a second of a compile kept a stale file that every start then ignored and
    compiled again (3 ms, found in a profile of a client's start)."""
    compile_tree(Path(__file__).resolve().parents[1])


def compile_tree(checkout: Path) -> None:
    """The bytecode of `checkout`'s engine, rewritten whole (see `compile_engine`)."""
    compileall.compile_dir(str(checkout / "engine"), quiet=1, force=True)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    require_root_and_tools(a)
    compile_engine()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    settings = Settings(relays=a.relay, client=a.client, server=a.server,
                        qual_client=a.qual_client, runs=a.runs, duration=a.duration,
                        qual_runs=a.qual_runs, tests=a.tests, prefix=a.prefix,
                        profile=a.profile, fleet=a.fleet)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = Path(tempfile.mkdtemp(prefix="teredo-bench."))
    os.chmod(run_dir, 0o755)  # miredo drops to its own user and must read its config
    meta = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **machine_meta(),
            "settings": f"relays {','.join(a.relay)}; client {a.client}; server {a.server}; "
                        f"{a.runs} run(s) x {a.duration:g} s per test; tests "
                        f"{','.join(a.tests)}; {a.qual_runs} qualification runs; ping -c "
                        f"{settings.ping_count} -i {settings.ping_interval:g}; fleet of "
                        f"{a.fleet} relays"}
    blocks: dict[str, dict] = {}
    extras: dict[str, str] = {}
    interrupted = False
    try:
        run_all(settings, run_dir, blocks, _log)
        if "ours" in a.relay:
            extras["Engine memory"] = engine_memory(a.peers, blocks.get("ours"), _log)
        prof = blocks.get("ours", {}).get("profile")
        if prof:
            extras["Where our relay's time goes (py-spy, TCP v6 -> client)"] = profile_text(
                prof.get("summary"), prof.get("row"), prof.get("note", ""))
    except KeyboardInterrupt:
        interrupted = True
        _log("interrupted: everything started was stopped; writing what was measured")
    rows = summarize(blocks)
    if interrupted:
        meta["settings"] += " (INTERRUPTED)"
    md, js = write(a.out, stamp, meta, blocks, rows, extras)
    print_table(blocks, rows)
    _log(f"results: {md} and {js}")
    failed = [i for i, b in blocks.items() if b["status"] != "ok"]
    if a.keep_logs or failed:
        _log(f"raw logs (configs, daemon logs, iperf3/ping output) kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        return 130
    return 0 if all(b["status"] == "ok" for b in blocks.values()) else 1


def print_table(blocks: dict[str, dict], rows: list[dict]) -> None:
    impls = list(blocks)
    both = "ours" in impls and "miredo" in impls
    w = max(len(r["title"]) + len(r["unit"]) + 3 for r in rows)
    head = f"{'measure':<{w}}" + "".join(f"{i:>12}" for i in impls)
    if both:
        head += f"{'ours/miredo':>13}  verdict"
    print(head)
    for r in rows:
        line = f"{r['title'] + ' (' + r['unit'] + ')':<{w}}" + "".join(
            f"{fmt(r['values'].get(i), r['digits']):>12}" for i in impls)
        if both:
            line += f"{fmt(r['ratio'], 2):>13}  {r['verdict']}"
        print(line)
    for impl, res in blocks.items():
        print(f"{impl}: {res['status']}")


if __name__ == "__main__":
    sys.exit(main())
