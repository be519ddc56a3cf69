"""The benchmark's parsers and comparison table, fed with recorded iperf3 3.12 / ping output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.report import markdown, summarize
from bench.stats import ParseError, median, parse_iperf, parse_ping, ratio, verdict

TCP = {"start": {"test_start": {"protocol": "TCP"}},
       "end": {"sum_sent": {"seconds": 3.0, "bits_per_second": 896845234.7, "retransmits": 43095},
               "sum_received": {"seconds": 3.0, "bits_per_second": 887866502.2}}}
UDP_MAX = {"start": {"test_start": {"protocol": "UDP"}},
           "end": {"sum": {"seconds": 3.0, "bits_per_second": 2647502108.8, "lost_packets": 711931,
                           "packets": 827800, "lost_percent": 86.0},
                   "sum_sent": {"seconds": 3.0, "bits_per_second": 2647502108.8},
                   "sum_received": {"seconds": 3.0, "bits_per_second": 368187965.5,
                                    "jitter_ms": 0.06, "lost_packets": 711931,
                                    "packets": 827210, "lost_percent": 86.0}}}
PING = """PING 2001:0:cb00:710a::1(2001:0:cb00:710a::1) 56 data bytes
64 bytes from 2001:0:cb00:710a::1: icmp_seq=1 ttl=63 time=0.300 ms
64 bytes from 2001:0:cb00:710a::1: icmp_seq=2 ttl=63 time=4.241 ms
64 bytes from 2001:0:cb00:710a::1: icmp_seq=3 ttl=63 time=0.100 ms

--- 2001:0:cb00:710a::1 ping statistics ---
100 packets transmitted, 98 received, 2% packet loss, time 1619ms
rtt min/avg/max/mdev = 0.039/0.339/4.241/0.560 ms
"""


def test_tcp_takes_the_receiver_rate_and_sender_retransmits():
    row = parse_iperf(TCP)
    assert row["mbit_s"] == pytest.approx(887.8665, rel=1e-6)
    assert row["sent_mbit_s"] == pytest.approx(896.8452, rel=1e-6)
    assert row["retransmits"] == 43095


def test_udp_flat_out_reports_received_not_offered():
    row = parse_iperf(UDP_MAX)
    assert row["mbit_s"] == pytest.approx(368.188, rel=1e-5)
    assert row["sent_mbit_s"] == pytest.approx(2647.502, rel=1e-5)
    assert row["loss_pct"] == pytest.approx(100 * 711931 / 827210)


def test_udp_old_iperf_without_sum_received_scales_the_sent_rate():
    doc = {"start": {"test_start": {"protocol": "UDP"}},
           "end": {"sum": {"bits_per_second": 1000e6, "packets": 1000, "lost_packets": 250}}}
    row = parse_iperf(doc)
    assert row["mbit_s"] == pytest.approx(750.0)
    assert row["loss_pct"] == pytest.approx(25.0)


@pytest.mark.parametrize("doc, word", [
    ({"error": "unable to connect to server: Connection refused"}, "Connection refused"),
    ({"start": {}}, "'end'"),
    ({"start": {"test_start": {"protocol": "TCP"}}, "end": {"sum_sent": {}}}, "sum_received"),
    ([], "not an object"),
])
def test_iperf_failures_say_why(doc, word):
    with pytest.raises(ParseError, match=word):
        parse_iperf(doc)


def test_ping_summary_and_rtt():
    row = parse_ping(PING)
    assert (row["sent"], row["received"]) == (100, 98)
    assert row["loss_pct"] == pytest.approx(2.0)
    assert (row["min_ms"], row["avg_ms"], row["max_ms"]) == (0.039, 0.339, 4.241)
    assert row["median_ms"] == 0.300  # the 4.2 ms stall moves the average, not the median
    assert row["p90_ms"] == 4.241


def test_ping_with_no_reply_has_no_rtt_and_garbage_is_refused():
    row = parse_ping("5 packets transmitted, 0 received, 100% packet loss, time 4000ms\n")
    assert row["received"] == 0 and "avg_ms" not in row
    with pytest.raises(ParseError, match="packets transmitted"):
        parse_ping("connect: Network is unreachable\n")


def test_median_ratio_verdict():
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(0.0, 0.0) is None and ratio(None, 1.0) is None
    assert verdict(0.0, 0.0, "lower") == "equal"
    assert verdict(1.0, 0.0, "lower") == "behind"
    assert verdict(500.0, 414.0, "higher") == "ahead"
    assert verdict(0.30, 0.40, "lower") == "ahead"
    assert verdict(101.0, 100.0, "higher", tolerance=0.02) == "equal"
    assert verdict(None, 1.0, "higher") == "-"


def _block(impl: str, mbit: list[float], cpu: float, rtt: float, status: str = "ok") -> dict:
    iperf = [{"test": "tcp-fwd", "run": i, "mbit_s": m, "relay_cpu_pct": cpu,
              "client_cpu_pct": 50.0} for i, m in enumerate(mbit, 1)]
    iperf.append({"test": "udp-rate", "run": 1, "mbit_s": 100.0, "loss_pct": 0.0,
                  "relay_cpu_pct": cpu / 10, "client_cpu_pct": 1.0})
    ping = [{"path": "tunnel v6->cli", "run": 1, "median_ms": rtt},
            {"path": "plain v6->rly", "run": 1, "median_ms": 0.05},
            {"path": "plain cli->rly", "run": 1, "median_ms": 0.05}]
    return {"impl": impl, "status": status, "iperf": iperf, "ping": ping,
            "qualify": [{"run": 1, "seconds": 0.02}], "memory": {},
            "client": "miredo", "server": "miredo"}


def test_summary_uses_medians_and_ratios_ours_over_miredo():
    blocks = {"miredo": _block("miredo", [400.0, 420.0, 414.0], 100.0, 0.47),
              "ours": _block("ours", [300.0, 200.0, 310.0], 100.0, 0.60)}
    rows = {r["key"]: r for r in summarize(blocks)}
    assert rows["tcp_fwd"]["values"] == {"miredo": 414.0, "ours": 300.0}
    assert rows["tcp_fwd"]["ratio"] == pytest.approx(300 / 414)
    assert rows["tcp_fwd"]["verdict"] == "behind"
    assert rows["udp_rate_loss"]["verdict"] == "equal"
    assert rows["rtt_added"]["values"]["ours"] == pytest.approx(0.50)
    assert rows["per_core_tcp_fwd"]["values"]["miredo"] == pytest.approx(414.0)
    assert rows["tcp_rev"]["values"] == {"miredo": None, "ours": None}


def test_failed_block_is_reported_and_shows_what_it_measured():
    blocks = {"miredo": _block("miredo", [414.0], 97.0, 0.47),
              "ours": {"impl": "ours", "status": "failed: relay exited", "iperf": [],
                       "ping": [], "qualify": [], "memory": {}, "client": "miredo",
                       "server": "miredo"}}
    rows = summarize(blocks)
    meta = {"started": "now", "machine": "m", "versions": "v", "settings": "s"}
    text = markdown(meta, blocks, rows, {"Engine memory": "- x"})
    assert "**ours**: failed: relay exited" in text
    assert "| TCP v6 host -> client | Mbit/s | higher | 414.0 | - | - | - |" in text
    assert "## Engine memory" in text


def test_peer_table_memory_probe_runs_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-m", "bench.peers_rss", "2000"], capture_output=True,
                         text=True, check=True).stdout
    d = json.loads(out)
    assert d["peers"] == 2000
    assert d["after_kib"] >= d["before_kib"] > 0


def test_pyspy_raw_stacks_rank_own_and_inclusive_time():
    from bench.profile import summarize

    raw = ("run (worker.py:400);_udp (worker.py:210);recvfrom (socket.py:1) 60\n"
           "run (worker.py:400);_udp (worker.py:212);udp_in (relay.py:90) 30\n"
           "run (worker.py:400);select (selectors.py:468) 10\n")
    s = summarize(raw, top=3)
    assert s["samples"] == 100
    assert s["own"][0] == ("recvfrom (socket.py)", 60.0)
    assert dict(s["inclusive"])["_udp (worker.py)"] == 90.0  # both lines of _udp merged
    assert s["own_lines"][0] == ("recvfrom (socket.py:1)", 60.0)
    assert "run (worker.py)" not in dict(s["inclusive"])  # on every sample: left out
    assert summarize("")["own"] == []


def test_address_events_only_a_new_global_address_on_the_teredo_interface_counts():
    from bench.daemons import announced_address

    glob = "12: teredo    inet6 2001:0:cb00:710a:3813:366e:39cc:9bfe/32 scope global "
    assert announced_address(glob, "teredo") == "2001:0:cb00:710a:3813:366e:39cc:9bfe"
    assert announced_address("12: teredo    inet6 fe80::ffff:ffff:ffff/64 scope link ",
                             "teredo") is None
    assert announced_address("Deleted " + glob, "teredo") is None
    assert announced_address(glob.replace("teredo", "teredo2"), "teredo") is None
    assert announced_address("       valid_lft forever preferred_lft forever", "teredo") is None
