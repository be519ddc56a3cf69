"""Coverage-guided fuzzing of the engine's parsers and roles with atheris (libFuzzer for Python).

    python -m fuzz seed                      # (re)write the seed corpus from tests/vectors/
    python -m fuzz all --seconds 10          # every target for 10 s each, then a JSON report
    python -m fuzz run relay --seconds 600   # one target; new inputs go to fuzz/corpus/relay/

Each target runs in a child process of its own (libFuzzer ends its process when done), with an
RSS limit: a role whose memory grows without bound under hostile input fails the run just as a
crash does.  The report gives, per target, the inputs run, the datagrams fed to the role and the
coverage libFuzzer reached (`cov`: code edges, `ft`: features).  A failing input is written to
`fuzz/crashes/<target>-*` and replays with `python -m fuzz replay FILE --target T`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
CRASHES = ROOT / "fuzz" / "crashes"
VECTORS = ROOT / "tests" / "vectors" / "lab_pcaps.txt"
RSS_LIMIT_MB = 1024
TARGET_NAMES = ("parsers", "server", "relay", "client")
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov:\s*(\d+)\s+ft:\s*(\d+)")


def cmd_seed(_: argparse.Namespace) -> int:
    from fuzz.harness import seeds

    for target, inputs in seeds(VECTORS).items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(inputs):
            (d / f"seed-{i:03d}").write_bytes(data)
        print(f"{target}: {len(inputs)} seeds in {d.relative_to(ROOT)}")
    return 0


def _child(target: str, libfuzzer_args: list[str]) -> int:
    """Inside the child: instrument the engine, then hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["engine"]):
        from fuzz import harness
    run = harness.one_input(target)
    fed = [0, 0]
    report = os.environ.get("FUZZ_COUNT_FILE")

    def test_one_input(data: bytes) -> None:
        fed[0] += 1
        fed[1] += run(data)
        if report and fed[0] % 256 == 0:
            Path(report).write_text(f"{fed[0]} {fed[1]}\n")

    def final() -> None:
        if report:
            Path(report).write_text(f"{fed[0]} {fed[1]}\n")

    import atexit

    atexit.register(final)
    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()
    return 0


def run_target(target: str, seconds: int, *, keep: bool) -> dict[str, object]:
    """Fuzz one target in a child process; returns its figures (raises on a finding)."""
    CRASHES.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / target
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        new = Path(tmp) / "new"
        new.mkdir()
        count = Path(tmp) / "count"
        # libFuzzer writes new inputs into the first directory: the repository's corpus only
        # when asked (make fuzz), a throw-away one otherwise (CI)
        dirs = [str(seeds)] if keep else [str(new), str(seeds)]
        args = [f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                "-print_final_stats=1", "-max_len=4096", "-timeout=10",
                f"-artifact_prefix={CRASHES}/{target}-", *dirs]
        env = {**os.environ, "FUZZ_COUNT_FILE": str(count), "PYTHONPATH": str(ROOT)}
        cp = subprocess.run([sys.executable, "-m", "fuzz", "_child", target, "--", *args],
                            capture_output=True, text=True, env=env, cwd=ROOT)
        log = cp.stdout + cp.stderr
        stats = {k: int(v) for k, v in _STAT.findall(log)}
        done = _DONE.findall(log)
        inputs, datagrams = (int(x) for x in (count.read_text().split()
                                                if count.exists() else (0, 0)))
        figures: dict[str, object] = {
            "target": target, "seconds": seconds, "exit": cp.returncode,
            "inputs": stats.get("number_of_executed_units", inputs),
            "datagrams": datagrams,
            "cov": int(done[-1][1]) if done else None,
            "ft": int(done[-1][2]) if done else None,
            "peak_rss_mb": stats.get("peak_rss_mb"),
            "new_units": stats.get("new_units_added"),
        }
        if cp.returncode != 0:
            tail = "\n".join(log.strip().splitlines()[-25:])
            raise SystemExit(f"fuzz {target}: libFuzzer exited {cp.returncode}\n{tail}")
        return figures


def cmd_run(a: argparse.Namespace) -> int:
    print(json.dumps(run_target(a.target, a.seconds, keep=True)))
    return 0


def cmd_all(a: argparse.Namespace) -> int:
    results = [run_target(t, a.seconds, keep=a.keep) for t in TARGET_NAMES]
    text = json.dumps(results, indent=1)
    if a.report:
        Path(a.report).write_text(text + "\n")
    print(text)
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from fuzz.harness import one_input

    one_input(a.target)(Path(a.file).read_bytes())
    print(f"{a.file}: no finding")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        sep = argv.index("--") if "--" in argv else len(argv)
        return _child(argv[1], argv[sep + 1:])
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("seed").set_defaults(fn=cmd_seed)
    r = sub.add_parser("run")
    r.add_argument("target", choices=TARGET_NAMES)
    r.add_argument("--seconds", type=int, default=600)
    r.set_defaults(fn=cmd_run)
    al = sub.add_parser("all")
    al.add_argument("--seconds", type=int, default=10)
    al.add_argument("--keep", action="store_true", help="add new inputs to fuzz/corpus/")
    al.add_argument("--report", help="also write the JSON report to this file")
    al.set_defaults(fn=cmd_all)
    rp = sub.add_parser("replay")
    rp.add_argument("file")
    rp.add_argument("--target", choices=TARGET_NAMES, required=True)
    rp.set_defaults(fn=cmd_replay)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
