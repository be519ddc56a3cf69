"""Pure helpers: parse iperf3 JSON and ping output, take medians, form ratios.

Kept free of I/O so that the unit tests can feed them recorded tool output.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable

_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_TIME = re.compile(r"\btime=([\d.]+) ms")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))? ms")


class ParseError(ValueError):
    """Tool output the benchmark cannot read; the message names the tool and the field."""


def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def parse_iperf(doc: dict) -> dict:
    """Receiver-side throughput (and UDP loss, TCP retransmits) of one `iperf3 -J` run.

    Received Mbit/s is what counts for a relay: at "flat out" the sender offers far more than
    the path carries and the difference is loss.
    """
    if not isinstance(doc, dict):
        raise ParseError("iperf3 JSON: top level is not an object")
    if doc.get("error"):
        raise ParseError(f"iperf3: {doc['error']}")
    end = doc.get("end")
    if not isinstance(end, dict):
        raise ParseError("iperf3 JSON: no 'end' section")
    udp = doc.get("start", {}).get("test_start", {}).get("protocol") == "UDP"
    row: dict = {}
    if udp:
        total = end.get("sum_received") or end.get("sum")
        if not isinstance(total, dict) or "bits_per_second" not in total:
            raise ParseError("iperf3 JSON: UDP run without end.sum_received/end.sum")
        sent = end.get("sum_sent") or end.get("sum") or total
        packets, lost = total.get("packets"), total.get("lost_packets")
        rate = total["bits_per_second"]
        if "sum_received" not in end and packets:
            # older iperf3: end.sum carries the SENT rate; scale it by what arrived
            rate *= (packets - lost) / packets
        row["mbit_s"] = rate / 1e6
        row["sent_mbit_s"] = sent.get("bits_per_second", 0) / 1e6
        if packets:
            row["loss_pct"] = 100.0 * lost / packets
            secs = total.get("seconds") or 0
            row["recv_pps"] = (packets - lost) / secs if secs else None
        else:
            row["loss_pct"] = total.get("lost_percent")
        row["jitter_ms"] = total.get("jitter_ms")
    else:
        recv, sent = end.get("sum_received"), end.get("sum_sent")
        if not isinstance(recv, dict) or "bits_per_second" not in recv:
            raise ParseError("iperf3 JSON: TCP run without end.sum_received.bits_per_second")
        row["mbit_s"] = recv["bits_per_second"] / 1e6
        if isinstance(sent, dict):
            row["sent_mbit_s"] = sent.get("bits_per_second", 0) / 1e6
            if "retransmits" in sent:
                row["retransmits"] = sent["retransmits"]
    return row


def parse_ping(text: str) -> dict:
    """sent, received, loss % and min/avg/max RTT (ms) from `ping -q` output."""
    m = _PING_SUMMARY.search(text)
    if not m:
        raise ParseError("ping: no 'packets transmitted' line in the output")
    sent, recv = int(m.group(1)), int(m.group(2))
    row: dict = {"sent": sent, "received": recv,
                 "loss_pct": 100.0 * (sent - recv) / sent if sent else None}
    r = _PING_RTT.search(text)
    if r:
        row["min_ms"], row["avg_ms"], row["max_ms"] = (float(r.group(i)) for i in (1, 2, 3))
    elif recv:
        raise ParseError("ping: replies received but no rtt line")
    times = sorted(float(t) for t in _PING_TIME.findall(text))
    if times:
        row["median_ms"] = statistics.median(times)
        row["p90_ms"] = times[min(len(times) - 1, int(0.9 * len(times)))]
    return row


def ratio(ours: float | None, miredo: float | None) -> float | None:
    """ours / miredo; None when either is missing or the ratio is undefined (0/0 or x/0)."""
    if ours is None or miredo is None or miredo == 0:
        return None
    return ours / miredo


def verdict(ours: float | None, miredo: float | None, better: str,
            tolerance: float = 0.0) -> str:
    """Plain words for the comparison: "ahead", "behind", "equal" (or "-" if not comparable).

    `better` is "higher" or "lower". A zero-vs-zero loss counts as equal, which a ratio
    cannot say.
    """
    if ours is None or miredo is None:
        return "-"
    if abs(ours - miredo) <= tolerance * max(abs(ours), abs(miredo)):
        return "equal"
    ahead = ours > miredo if better == "higher" else ours < miredo
    return "ahead" if ahead else "behind"
