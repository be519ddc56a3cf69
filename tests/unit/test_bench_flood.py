"""The flood benchmark's pure parts: its Teredo destinations, the `ping -D -O` log reader, the
RTT windows and the ours/miredo table, without a lab."""

from __future__ import annotations

import pytest

from bench.flood import markdown, parse_ping_log, rtt_window, summarize
from bench.flood_send import destinations
from tests.kernel.harness import decode_teredo

PING_LOG = """PING 2001:0:cb00:710a::1(2001:0:cb00:710a::1) 56 data bytes
[1000.100500] 64 bytes from 2001:0:cb00:710a::1: icmp_seq=1 ttl=63 time=0.500 ms
[1000.301000] 64 bytes from 2001:0:cb00:710a::1: icmp_seq=2 ttl=63 time=1.000 ms
[1000.700000] no answer yet for icmp_seq=3
[1000.720000] 64 bytes from 2001:0:cb00:710a::1: icmp_seq=4 ttl=63 time=20.000 ms
[1000.900300] 64 bytes from 2001:0:cb00:710a::1: icmp_seq=5 ttl=63 time=0.300 ms
"""


def test_destinations_are_distinct_teredo_addresses_under_the_server():
    addrs = destinations("203.0.113.10", 120_000)
    assert len(set(addrs)) == 120_000
    first, last = decode_teredo(addrs[0]), decode_teredo(addrs[-1])
    assert (first.server, first.flags, first.client, first.port) == (
        "203.0.113.10", 0, "192.0.2.1", 10_000)
    assert last.server == "203.0.113.10" and last.client == "192.0.2.3"
    assert all(addr.startswith("2001:0:cb00:710a:") for addr in addrs[::997])
    with pytest.raises(ValueError):
        destinations("203.0.113.10", 0)


def test_ping_log_rows_and_windows():
    rows = parse_ping_log(PING_LOG, 0.2)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["sent"] == pytest.approx(1000.1)
    assert rows[2]["rtt_ms"] is None and rows[2]["sent"] == pytest.approx(1000.5)
    flood = rtt_window(rows, 1000.25, 1000.75)  # seq 2, 3 (lost), 4
    assert (flood["sent"], flood["received"]) == (3, 2)
    assert flood["loss_pct"] == pytest.approx(100 / 3)
    assert flood["median_ms"] == pytest.approx(10.5) and flood["max_ms"] == 20.0
    assert rtt_window(rows, 2000, 3000) == {"sent": 0, "received": 0, "loss_pct": None}
    assert parse_ping_log("PING x\n", 0.2) == []


def _run(impl: str, rnd: int, growth_kib: int, rtt: float) -> dict:
    idle = {"pss_kib": 1000, "uss_kib": 500, "rss_kib": 5000, "hwm_kib": 5000}
    peak = {k: v + growth_kib for k, v in idle.items()}
    return {"impl": impl, "round": rnd, "status": "ok", "relay_up": True, "server": impl,
            "memory": {"idle": idle, "peak": peak, "after": peak},
            "relay_tun": {"tx_packets": 1024, "tx_dropped": 0},
            "flood": {"sent": 1024, "rate_pps": 10_000.0},
            "rtt": {"flood": {"median_ms": rtt, "max_ms": rtt * 10, "loss_pct": 0.0}},
            "status_socket": {"flood_end": {"peers": {"count": 1025}} if impl == "ours"
                              else None}}


def test_table_medians_ratios_and_markdown():
    runs = [_run("ours", 1, 3072, 0.4), _run("miredo", 1, 1024, 0.2),
            _run("ours", 2, 2048, 0.6), _run("miredo", 2, 1024, 0.2)]
    rows = {r["key"]: r for r in summarize(runs, ["ours", "miredo"])}
    g = rows["pss_peak_growth"]
    assert g["values"] == {"ours": 2.5, "miredo": 1.0} and g["ratio"] == 2.5
    assert g["rounds"]["ours"] == [3.0, 2.0]
    assert rows["pss_per_dest"]["values"]["miredo"] == 1024.0
    assert rows["rtt_flood"]["ratio"] == pytest.approx(2.5)
    assert rows["peers_peak"]["values"] == {"ours": 1025, "miredo": None}
    assert rows["relay_up"]["values"] == {"ours": True, "miredo": True}
    meta = {"destinations": 1024, "started": "now", "machine": "m", "versions": "v",
            "command": "c", "settings": "s"}
    text = markdown(meta, runs, list(rows.values()), ["ours", "miredo"])
    assert "| measure | unit | ours | miredo | ours/miredo |" in text
    assert "| relay PSS growth at the peak (peak - idle) | MiB | 2.5 (3.0, 2.0) | 1.0 (1.0, 1.0) " \
           "| 2.50 |" in text
