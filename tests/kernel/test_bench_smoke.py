"""The benchmark end to end, briefly: Debian's miredo measured through a real lab, a relay that
cannot start reported as failed without costing the other column, results written, and every
namespace and process gone afterwards."""

from __future__ import annotations

import json
import signal
import tempfile

import pytest

from bench import __main__ as bench_main
from bench import runner
from teredolab import netns
from tests.kernel import harness as h
from tests.kernel.conftest import unique_prefix

pytestmark = pytest.mark.kernel

BROKEN = h.Implementation("broken", {"relay": ("sh", "-c", "echo relay refuses to start; exit 3")})


def test_miredo_measured_and_broken_relay_reported(debian_miredo, tmp_path, monkeypatch):
    work = tmp_path / "work"  # the run directory is kept when a block fails: keep it here
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    out = tmp_path / "results"
    real = runner.implementation
    monkeypatch.setattr(runner, "implementation",
                        lambda name: BROKEN if name == "ours" else real(name))
    prefix = unique_prefix()
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        rc = bench_main.main(["--relay", "ours,miredo", "--runs", "1", "--duration", "1",
                              "--qual-runs", "1", "--tests", "udp-rate,tcp-fwd", "--peers",
                              "1000", "--fleet", "2", "--prefix", prefix.rstrip("-"),
                              "--out", str(out)])
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    assert rc == 1  # one block failed
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix.rstrip("-"))]
    (js,) = out.glob("bench-*.json")
    (md,) = out.glob("bench-*.md")
    (kept,) = work.glob("teredo-bench.*")  # kept for the failed block's logs
    assert "relay refuses to start" in (kept / "ours" / "relay.log").read_text()
    doc = json.loads(js.read_text())
    ours, miredo = doc["blocks"]["ours"], doc["blocks"]["miredo"]
    assert ours["status"].startswith("failed:") and "relay refuses to start" in ours["status"]
    assert miredo["status"] == "ok"
    rows = {r["key"]: r for r in doc["summary"]}
    assert rows["tcp_fwd"]["values"]["miredo"] > 0
    assert rows["udp_rate_loss"]["values"]["miredo"] is not None
    assert rows["qual"]["values"]["miredo"] > 0
    assert rows["rtt_v6_cli"]["values"]["miredo"] > 0
    assert rows["rtt_load"]["values"]["miredo"] > 0
    assert rows["fleet_pss"]["values"]["miredo"] > 0
    assert rows["tcp_fwd"]["values"]["ours"] is None
    assert "**ours**: failed" in md.read_text()
