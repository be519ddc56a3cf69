"""The flood benchmark (`python -m bench.flood`) end to end at a tiny size: both relays flooded
with 500 Teredo destinations through a real lab, the report written with its fields, the
relays up afterwards, and every namespace gone."""

from __future__ import annotations

import json
import signal
import time

import pytest

from bench import flood
from teredolab import netns
from tests.kernel.conftest import unique_prefix

pytestmark = pytest.mark.kernel

N = 500


def test_flood_small_report_fields_and_relays_survive(debian_miredo, tmp_path):
    prefix = unique_prefix().rstrip("-")
    out = tmp_path / "results"
    old_term = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        rc = flood.main(["--destinations", str(N), "--rate", "5000", "--pre", "1",
                         "--settle", "2", "--expire-wait", "0", "--prefix", prefix,
                         "--out", str(out)])
    finally:
        signal.signal(signal.SIGTERM, old_term)
    took = time.monotonic() - t0
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    (js,) = out.glob("flood-*.json")
    (md,) = out.glob("flood-*.md")
    doc = json.loads(js.read_text())
    runs = {r["impl"]: r for r in doc["runs"]}
    assert rc == 0, {i: r["status"] for i, r in runs.items()}
    assert set(runs) == {"ours", "miredo"}
    for impl, r in runs.items():
        assert r["status"] == "ok" and r["relay_up"], impl
        assert r["flood"]["sent"] == N and r["flood"]["errors"] == 0
        for when in ("idle", "peak", "after"):
            assert r["memory"][when]["pss_kib"] > 0 and r["memory"][when]["uss_kib"] > 0
            assert r["memory"][when]["rss_kib"] > 0
        assert r["memory"]["peak"]["pss_kib"] >= r["memory"]["idle"]["pss_kib"] // 2
        assert r["relay_tun"]["tx_packets"] >= N  # the flood reached the relay
        assert r["rtt"]["flood"]["sent"] > 0 and r["rtt"]["flood"]["received"] > 0
        assert r["rtt"]["before"]["median_ms"] > 0
    # our relay's status socket: one entry per destination reached, plus the good client
    ours = runs["ours"]["status_socket"]["after"]
    assert ours["worker"] == "running"
    assert N - runs["ours"]["relay_tun"]["tx_dropped"] <= ours["peers"]["count"] <= N + 1
    assert runs["miredo"]["status_socket"]["after"] is None  # miredo has no status socket
    rows = {row["key"]: row for row in doc["summary"]}
    for key in ("pss_peak_growth", "uss_peak_growth", "rss_peak_growth", "rtt_flood",
                "rtt_flood_max", "loss_flood"):
        assert rows[key]["values"]["ours"] is not None, key
        assert rows[key]["values"]["miredo"] is not None, key
    assert rows["pss_peak_growth"]["ratio"] is not None
    assert rows["peers_peak"]["values"]["ours"] >= 1
    assert rows["relay_up"]["values"] == {"ours": True, "miredo": True}
    text = md.read_text()
    assert "| measure | unit | ours | miredo | ours/miredo |" in text
    assert "relay PSS growth at the peak" in text
    assert took < 90, f"took {took:.0f} s"
