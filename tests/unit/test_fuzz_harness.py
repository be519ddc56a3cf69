"""The fuzzing harness (fuzz/): its seeds replay cleanly, and a bounded atheris run of every target
finishes without a finding.  `make fuzz` runs the same targets for as long as asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import harness

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def test_decode_is_total_and_inverts_encode():
    events = [harness.Event(0, 3, 3544, b"\x60" * 40), harness.Event(2, 0, 1500, b""),
              harness.Event(1, 0, 0, b"abc")]
    assert list(harness.decode(harness.encode(events))) == events
    for junk in (b"", b"\x01", bytes(range(256)), b"\xff" * 7):
        list(harness.decode(junk))


@pytest.mark.parametrize("target", list(harness.TARGETS))
def test_committed_corpus_replays_without_a_finding(target):
    files = sorted((CORPUS / target).iterdir())
    assert len(files) >= 50, f"fuzz/corpus/{target} lost its seeds (python -m fuzz seed)"
    run = harness.one_input(target)
    fed = sum(run(f.read_bytes()) for f in files)
    assert fed >= len(files)


def test_the_invariant_check_catches_a_native_neighbor_advertisement():
    """The fuzzer's oracle must be able to fail: a server that leaked an NA is reported."""
    s = harness.make_server()
    s.raw6_out.append(bytes.fromhex("6000000000203aff") + bytes(32) + bytes([136]) + bytes(31))
    with pytest.raises(AssertionError, match="non-ping-test"):
        harness.check_invariants(s)


def test_a_client_target_starts_qualified():
    c = harness.make_client()
    assert c.status()["state"] == "qualified"


def test_bounded_atheris_run_of_every_target(tmp_path):
    pytest.importorskip("atheris")
    report = tmp_path / "fuzz.json"
    cp = subprocess.run([sys.executable, "-m", "fuzz", "all", "--seconds", "6",
                         "--report", str(report)], cwd=ROOT, capture_output=True, text=True,
                        timeout=240)
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    results = {r["target"]: r for r in json.loads(report.read_text())}
    assert set(results) == set(harness.TARGETS)
    for name, r in results.items():
        assert r["inputs"] > 0 and r["cov"], f"{name}: {r}"
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] < 1024, f"{name}: {r}"
    for role in ("server", "relay", "client"):
        assert results[role]["datagrams"] > 0, results[role]
