"""`python -m bench.flood`: a relay's memory, and a good peer's RTT, under an on-the-wire flood to
N distinct Teredo destinations; ours and Debian's miredo in the same run (issue 9).

Any IPv6 host can make a relay create one peer entry (and queue one packet) per Teredo
destination it sends to. This sends one small UDP packet to each of N distinct Teredo
destinations (`bench.flood_send`) from the lab's native IPv6 host, through the relay under
test, while a good, verified Teredo client is pinged every 0.2 s from the same host, and reads
the relay's process tree from /proc (PSS and USS from smaps_rollup, RSS from status) before,
throughout and after.

For each implementation in turn (`--impls`, alternating for `--rounds`): a fresh lab
(`teredolab.topology`, one restricted NAT and client), the Teredo server (`--server`, by default
the same implementation), the relay under test (`RelayType cone`, the harness's config) and one
client of the same implementation, all started through `tests/kernel/harness.py` as the kernel
tests start them. The client is qualified (timed), the path opened both ways (so the client is
a verified peer of the relay), the relay measured idle, then: ping v6 host -> client every
`--ping-interval` s for `--pre` s, the flood (`--rate` packets/s), `--settle` s more; the relay's
memory sampled every 0.25 s throughout (peak = the largest sample), our relay's status socket
read after the flood (peer count, byte budget, drops; miredo has no status socket), then,
with `--expire-wait`, once more after the relay's entries have expired (30-60 s). The relay's
TUN counters (kernel side: what reached the relay, what its queue dropped) and CPU time are
read around the flood. Everything is then stopped by PID and the lab removed, also on failure
or Ctrl-C.

Results: `bench/results/flood-<UTC time>.md` (+ `.json`, with every round's raw samples); the
table has ours | miredo | ours/miredo, medians over rounds. Memory figures do not depend on the
machine's load; RTT and CPU figures do (a shared 2-core VM swings by a factor of 2 or more).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.daemons import IMPLS, implementation, start_client_timed
from bench.flood_send import MAX_DESTINATIONS
from bench.measure import TunnelPath, link_stat, warm_path
from bench.procs import CLK_TCK, ProcessGroup, tree_cpu_ticks, tree_memory_kib
from bench.report import machine_meta
from bench.stats import median, ratio
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel import harness as h

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MEM_FIELDS = ("pss_kib", "uss_kib", "rss_kib")
SAMPLE_EVERY = 0.25
FLOOD_TAIL = 1.0
"""Seconds after the sender's last packet still counted as "during the flood" for the RTT: the
relay may still be working through the TUN queue."""

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ping log
_PING_LINE = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms")
_PING_LOST = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


def parse_ping_log(text: str, interval: float) -> list[dict]:
    """One row per echo request of a `ping -D -O` run: seq, sent (Unix time), rtt_ms or None.

    A reply's send time is its reception time minus its RTT; a lost request's is estimated
    from the others (ping's schedule: one request every `interval` s).
    """
    got: dict[int, tuple[float, float]] = {}
    seen: set[int] = set()
    for line in text.splitlines():
        m = _PING_LINE.match(line)
        if m:
            t, seq, rtt = float(m.group(1)), int(m.group(2)), float(m.group(3))
            got.setdefault(seq, (t - rtt / 1000.0, rtt))
            seen.add(seq)
            continue
        m = _PING_LOST.match(line)
        if m:
            seen.add(int(m.group(2)))
    if not seen:
        return []
    offsets = [sent - (seq - 1) * interval for seq, (sent, _) in got.items()]
    t0 = statistics.median(offsets) if offsets else None
    rows = []
    for seq in range(1, max(seen) + 1):
        if seq in got:
            rows.append({"seq": seq, "sent": got[seq][0], "rtt_ms": got[seq][1]})
        else:
            rows.append({"seq": seq, "sent": None if t0 is None else t0 + (seq - 1) * interval,
                         "rtt_ms": None})
    return rows


def rtt_window(rows: list[dict], start: float, end: float) -> dict:
    """RTT median / p90 / max and loss of the requests sent in [start, end)."""
    sel = [r for r in rows if r["sent"] is not None and start <= r["sent"] < end]
    rtts = sorted(r["rtt_ms"] for r in sel if r["rtt_ms"] is not None)
    out: dict = {"sent": len(sel), "received": len(rtts),
                 "loss_pct": 100.0 * (len(sel) - len(rtts)) / len(sel) if sel else None}
    if rtts:
        out.update(median_ms=statistics.median(rtts), max_ms=rtts[-1], min_ms=rtts[0],
                   p90_ms=rtts[min(len(rtts) - 1, int(0.9 * len(rtts)))])
    return out


# --------------------------------------------------------------------------- sampling
class MemorySampler(threading.Thread):
    """PSS/USS/RSS of the relay's process tree every SAMPLE_EVERY s, with its time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[dict] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            m = tree_memory_kib(self.pid)
            if m["rss_kib"]:
                self.samples.append({"t": time.time(), **{k: m[k] for k in MEM_FIELDS}})
            self.halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)

    def peak(self) -> dict[str, int]:
        return {k: max((s[k] for s in self.samples), default=0) for k in MEM_FIELDS}


def relay_status(relay: h.Daemon) -> dict | None:
    """Our relay's status answer, trimmed to what the flood changes; None for miredo (no
    status socket) or when it does not answer. Counting the peers walks the table (about 10
    ms at 100,000 entries), which is why it is read at a few points only, not polled."""
    if relay.impl is not h.OURS:
        return None
    try:
        st = h.engine_status(relay.status_socket)
    except (OSError, ValueError) as e:
        return {"error": str(e)}
    counters = st.get("counters", {})
    return {"peers": st.get("peers"), "peer_memory": st.get("peer_memory"),
            "worker": st.get("worker"), "worker_restarts": st.get("worker_restarts"),
            "tun_in_packets": counters.get("tun_in_packets"),
            "udp_out_packets": counters.get("udp_out_packets"),
            "drops": {k: v for k, v in counters.get("drops", {}).items() if v}}


def tun_counters(lab: NetnsLab) -> dict[str, int]:
    """What the kernel handed the relay's TUN device (its tx side: packets for the relay to
    read) and what it dropped because the relay did not read fast enough."""
    ns, ifn = lab.ns("rly"), lab.spec.teredo_if
    return {k: link_stat(ns, ifn, k) for k in ("tx_packets", "tx_dropped")}


# --------------------------------------------------------------------------- one run
def run_one(impl: str, rnd: int, a: argparse.Namespace, run_dir: Path, log: Log) -> dict:
    """One implementation, one round: lab up, flood, measure, everything down."""
    tag = f"{impl}{rnd}"
    sdir = run_dir / tag
    sdir.mkdir(parents=True, exist_ok=True)
    res: dict = {"impl": impl, "round": rnd, "status": "running", "memory": {},
                 "status_socket": {}}
    prefix = f"{a.prefix or f'fl{os.getpid() % 100000}'}{impl[0]}{rnd}-"
    lab = NetnsLab(LabSpec(prefix=prefix, with_client2=False))
    stack = h.Stack(lab, sdir)
    group = ProcessGroup(sdir)
    sampler: MemorySampler | None = None
    relay_impl = implementation(impl)
    server = impl if a.server == "same" else a.server
    res["server"] = server
    try:
        log(f"[{tag}] building lab {prefix}*")
        lab.up()
        h.start_server(stack, implementation(server))
        relay = h.start_relay(stack, relay_impl)
        client, secs, addr = start_client_timed(stack, implementation(impl), "cli")
        res["qualify_s"] = secs
        path = TunnelPath(lab.ns("rly"), lab.ns("cli"), lab.ns("v6"), relay, client, addr,
                          lab.spec)
        if not warm_path(path):
            raise RuntimeError(f"no ping through the tunnel (v6 host <-> client); relay log: "
                               f"{relay.log_tail()}")
        log(f"[{tag}] relay pid {relay.pid}, {impl} client {addr} qualified in "
            f"{'?' if secs is None else f'{secs:.3f}'} s, path open")
        time.sleep(1.0)
        pid = relay.pid or 0
        res["memory"]["idle"] = tree_memory_kib(pid)
        res["status_socket"]["idle"] = relay_status(relay)
        log(f"[{tag}] relay idle: PSS {res['memory']['idle']['pss_kib']} KiB, USS "
            f"{res['memory']['idle']['uss_kib']} KiB, RSS {res['memory']['idle']['rss_kib']} KiB")

        sampler = MemorySampler(pid)
        sampler.start()
        ping = group.start("ping", lab.ns("v6"), ["ping", "-6", "-n", "-D", "-O", "-i",
                                                   f"{a.ping_interval:g}", "-W", "2", addr])
        time.sleep(a.pre)
        tun0, cpu0 = tun_counters(lab), tree_cpu_ticks(pid)
        res["load_average"] = os.getloadavg()[0]  # at the flood's start: RTT and CPU depend on it
        sender = group.start("flood", lab.ns("v6"), [
            h.venv_python(), "-m", "bench.flood_send", "--server", lab.spec.srv_ip1,
            "--prefix", lab.spec.teredo_prefix, "--destinations", str(a.destinations),
            "--rate", f"{a.rate:g}", "--size", str(a.size)],
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        limit = 60 + (a.destinations / a.rate * 3 if a.rate else a.destinations / 5000)
        try:
            sender.popen.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the sender did not finish within {limit:.0f} s") from None
        lines = sender.log.read_text(errors="replace").strip().splitlines()
        try:
            flood = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise RuntimeError(f"the sender failed: {sender.tail()}") from None
        res["flood"] = flood
        res["status_socket"]["flood_end"] = relay_status(relay)
        log(f"[{tag}] sent {flood['sent']} packets in {flood['seconds']:.2f} s "
            f"({flood['rate_pps']:.0f}/s, {flood['errors']} send errors)")
        time.sleep(FLOOD_TAIL)
        tun1, cpu1 = tun_counters(lab), tree_cpu_ticks(pid)
        res["relay_tun"] = {k: tun1[k] - tun0[k] for k in tun0}
        res["relay_cpu_s"] = (cpu1 - cpu0) / CLK_TCK
        time.sleep(max(0.0, a.settle - FLOOD_TAIL))
        group.stop(ping, sig=signal.SIGINT)
        res["memory"]["after"] = tree_memory_kib(pid)
        res["status_socket"]["after"] = relay_status(relay)
        if a.expire_wait > 0:
            log(f"[{tag}] waiting {a.expire_wait:g} s for the relay's entries to expire")
            time.sleep(a.expire_wait)
            res["memory"]["expired"] = tree_memory_kib(pid)
            res["status_socket"]["expired"] = relay_status(relay)
        sampler.stop()
        res["memory"]["peak"] = sampler.peak()
        res["memory"]["hwm_kib"] = res["memory"]["after"]["hwm_kib"]
        res["memory"]["samples"] = sampler.samples

        rows = parse_ping_log(ping.log.read_text(errors="replace"), a.ping_interval)
        start, end = flood["start"], flood["end"] + FLOOD_TAIL
        res["rtt"] = {"before": rtt_window(rows, 0, start),
                      "flood": rtt_window(rows, start, end),
                      "after": rtt_window(rows, end, float("inf")),
                      "all": rtt_window(rows, 0, float("inf"))}
        res["relay_up"] = relay.alive()
        last = res["status_socket"].get("expired") or res["status_socket"].get("after")
        if relay_impl is h.OURS and (last is None or "error" in last
                                     or last.get("worker") != "running"):
            res["relay_up"] = False
        res["status"] = "ok" if res["relay_up"] else f"failed: relay down: {relay.log_tail()}"
        peak, idle = res["memory"]["peak"], res["memory"]["idle"]
        fl = res["rtt"]["flood"]
        log(f"[{tag}] peak PSS {peak['pss_kib']} KiB (+{peak['pss_kib'] - idle['pss_kib']}), "
            f"USS +{peak['uss_kib'] - idle['uss_kib']}, RSS +{peak['rss_kib'] - idle['rss_kib']}"
            f"; good peer RTT during the flood median {fmt(fl.get('median_ms'), 2)} ms, max "
            f"{fmt(fl.get('max_ms'), 1)} ms, loss {fmt(fl.get('loss_pct'), 1)} %; relay "
            f"{'up' if res['relay_up'] else 'DOWN'}")
    except KeyboardInterrupt:
        res["status"] = "interrupted"
        raise
    except Exception as e:
        res["status"] = f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        log(f"[{tag}] FAILED: {res['status']}")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        try:
            group.stop_all()
            stack.stop()
        finally:
            lab.down()
    return res


# --------------------------------------------------------------------------- report
def _mem(r: dict, when: str, key: str) -> float | None:
    v = r.get("memory", {}).get(when, {})
    return v.get(key) if isinstance(v, dict) else None


def _growth(r: dict, when: str, key: str) -> float | None:
    a, b = _mem(r, when, key), _mem(r, "idle", key)
    return None if a is None or b is None else (a - b) / 1024.0


def _per_packet(r: dict, key: str) -> float | None:
    """Peak growth in bytes per packet the kernel handed the relay's TUN (the flood's
    destinations that reached it, plus the few pings), so that a relay whose TUN queue
    dropped part of the flood is compared per destination it actually saw."""
    g, n = _growth(r, "peak", key), r.get("relay_tun", {}).get("tx_packets")
    return None if g is None or not n else g * 1048576 / n


def _status(r: dict, when: str, *path: str) -> float | None:
    v = (r.get("status_socket") or {}).get(when)
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def _rtt(r: dict, window: str, key: str) -> float | None:
    return r.get("rtt", {}).get(window, {}).get(key)


# key, title, unit, digits, getter
MEASURES: list[tuple[str, str, str, int, Callable[[dict], float | None]]] = [
    ("pss_idle", "relay PSS idle (process tree)", "KiB", 0, lambda r: _mem(r, "idle", "pss_kib")),
    ("uss_idle", "relay USS idle", "KiB", 0, lambda r: _mem(r, "idle", "uss_kib")),
    ("rss_idle", "relay RSS idle", "KiB", 0, lambda r: _mem(r, "idle", "rss_kib")),
    ("pss_peak_growth", "relay PSS growth at the peak (peak - idle)", "MiB", 1,
     lambda r: _growth(r, "peak", "pss_kib")),
    ("uss_peak_growth", "relay USS growth at the peak", "MiB", 1,
     lambda r: _growth(r, "peak", "uss_kib")),
    ("rss_peak_growth", "relay RSS growth at the peak", "MiB", 1,
     lambda r: _growth(r, "peak", "rss_kib")),
    ("pss_per_dest", "relay PSS growth at the peak per packet that reached the relay",
     "bytes", 0, lambda r: _per_packet(r, "pss_kib")),
    ("uss_per_dest", "relay USS growth at the peak per packet that reached the relay",
     "bytes", 0, lambda r: _per_packet(r, "uss_kib")),
    ("pss_peak", "relay PSS at the peak", "KiB", 0, lambda r: _mem(r, "peak", "pss_kib")),
    ("uss_peak", "relay USS at the peak", "KiB", 0, lambda r: _mem(r, "peak", "uss_kib")),
    ("rss_peak", "relay RSS at the peak", "KiB", 0, lambda r: _mem(r, "peak", "rss_kib")),
    ("pss_after_growth", "relay PSS growth after the flood (--settle s)", "MiB", 1,
     lambda r: _growth(r, "after", "pss_kib")),
    ("uss_after_growth", "relay USS growth after the flood", "MiB", 1,
     lambda r: _growth(r, "after", "uss_kib")),
    ("pss_expired_growth", "relay PSS growth once the entries expired (--expire-wait s)",
     "MiB", 1, lambda r: _growth(r, "expired", "pss_kib")),
    ("uss_expired_growth", "relay USS growth once the entries expired", "MiB", 1,
     lambda r: _growth(r, "expired", "uss_kib")),
    ("peers_peak", "peers in the relay's table after the flood (status socket)", "entries", 0,
     lambda r: _status(r, "flood_end", "peers", "count")),
    ("peers_after", "peers in the table after --settle", "entries", 0,
     lambda r: _status(r, "after", "peers", "count")),
    ("peers_expired", "peers in the table once the entries expired", "entries", 0,
     lambda r: _status(r, "expired", "peers", "count")),
    ("budget_mib", "peer table's accounted bytes after the flood (budget 128 MiB)", "MiB", 1,
     lambda r: (lambda b: None if b is None else b / 1048576)(
         _status(r, "flood_end", "peer_memory", "bytes"))),
    ("evicted", "pending entries evicted by the byte budget", "entries", 0,
     lambda r: _status(r, "after", "peer_memory", "evicted")),
    ("sent", "flood packets sent", "packets", 0, lambda r: r.get("flood", {}).get("sent")),
    ("rate", "flood rate reached by the sender", "packets/s", 0,
     lambda r: r.get("flood", {}).get("rate_pps")),
    ("tun_delivered", "packets the kernel handed the relay's TUN (flood + pings)", "packets", 0,
     lambda r: r.get("relay_tun", {}).get("tx_packets")),
    ("tun_dropped", "packets dropped at the relay's TUN queue (relay too slow)", "packets", 0,
     lambda r: r.get("relay_tun", {}).get("tx_dropped")),
    ("cpu", "relay CPU during the flood (+1 s)", "s", 2, lambda r: r.get("relay_cpu_s")),
    ("rtt_before", "good peer RTT before the flood, median", "ms", 3,
     lambda r: _rtt(r, "before", "median_ms")),
    ("rtt_flood", "good peer RTT during the flood, median", "ms", 3,
     lambda r: _rtt(r, "flood", "median_ms")),
    ("rtt_flood_p90", "good peer RTT during the flood, p90", "ms", 2,
     lambda r: _rtt(r, "flood", "p90_ms")),
    ("rtt_flood_max", "good peer RTT during the flood, max", "ms", 2,
     lambda r: _rtt(r, "flood", "max_ms")),
    ("loss_flood", "good peer loss during the flood", "%", 1,
     lambda r: _rtt(r, "flood", "loss_pct")),
    ("rtt_all_max", "good peer RTT, max over the whole run", "ms", 2,
     lambda r: _rtt(r, "all", "max_ms")),
    ("loss_all", "good peer loss over the whole run", "%", 1,
     lambda r: _rtt(r, "all", "loss_pct")),
    ("qualify", "client qualification (column's own client)", "s", 3,
     lambda r: r.get("qualify_s")),
]


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summarize(runs: list[dict], impls: list[str]) -> list[dict]:
    """One row per measure: per implementation the median over its rounds and the values of
    every round, and the ratio ours / miredo of the medians."""
    rows = []
    for key, title, unit, digits, get in MEASURES:
        vals, per = {}, {}
        for impl in impls:
            mine = [get(r) for r in runs if r["impl"] == impl and r.get("memory")]
            per[impl] = mine
            vals[impl] = median(mine)
        rows.append({"key": key, "title": title, "unit": unit, "digits": digits,
                     "values": vals, "rounds": per,
                     "ratio": ratio(vals.get("ours"), vals.get("miredo"))})
    survived = {impl: all(r.get("relay_up") for r in runs if r["impl"] == impl) for impl in impls}
    rows.append({"key": "relay_up", "title": "relay stayed up (every round)", "unit": "",
                 "digits": 0, "values": survived,
                 "rounds": {i: [r.get("relay_up") for r in runs if r["impl"] == i]
                            for i in impls}, "ratio": None})
    return rows


def _cell(row: dict, impl: str) -> str:
    v = row["values"].get(impl)
    if row["key"] == "relay_up":
        return "yes" if v else "NO"
    rounds = row["rounds"].get(impl, [])
    text = fmt(v, row["digits"])
    if len(rounds) > 1 and any(x is not None for x in rounds):
        text += " (" + ", ".join(fmt(x, row["digits"]) for x in rounds) + ")"
    return text


def markdown(meta: dict, runs: list[dict], rows: list[dict], impls: list[str]) -> str:
    both = "ours" in impls and "miredo" in impls
    out = [f"# Relay under a flood of {meta['destinations']} Teredo destinations, "
           f"{meta['started']}", "",
           f"Machine: {meta['machine']}. {meta['versions']}.",
           f"Command: `{meta['command']}`.",
           f"Settings: {meta['settings']}.", "",
           "From the lab's native IPv6 host, one UDP packet to each of N distinct Teredo "
           "destinations (2001:0:cb00:710a::/64, non-cone, mapped 192.0.2.x with distinct "
           "ports) goes through the relay under test, while a verified client of the same "
           "implementation is pinged every 0.2 s from the same host. Memory is the relay's "
           "process tree (PSS and USS from /proc/PID/smaps_rollup, RSS from status), sampled "
           "every 0.25 s; growth is against the idle relay just before. Values are medians "
           "over rounds (every round's value in parentheses); the implementations ran one "
           "after the other, alternating. Memory figures do not depend on the machine's "
           "load; RTT and CPU do (this VM is shared with other test runs).", ""]
    for r in runs:
        load = r.get("load_average")
        out.append(f"- {r['impl']} round {r['round']} (server {r.get('server')}"
                   + ("" if load is None else f", 1-minute load average {load:.1f} at the flood")
                   + f"): {r['status']}")
    out.append("")
    head = "| measure | unit | " + " | ".join(impls) + (" | ours/miredo |" if both else " |")
    out += [head, "|---|---|" + "---|" * len(impls) + ("---|" if both else "")]
    for row in rows:
        line = f"| {row['title']} | {row['unit']} | " + " | ".join(_cell(row, i) for i in impls)
        if both:
            line += f" | {fmt(row['ratio'], 2)}"
        out.append(line + " |")
    out.append("")
    for r in runs:
        drops = (_status(r, "after", "drops") or {})
        if drops:
            out.append(f"- {r['impl']} round {r['round']}: our relay's drops after the flood: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--destinations", type=int, default=100_000,
                   help="distinct Teredo destinations, one packet each (default 100000)")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds; each runs every implementation once, alternating (default 1)")
    p.add_argument("--impls", default="ours,miredo",
                   help="implementations in order (default ours,miredo)")
    p.add_argument("--server", choices=("same", *IMPLS), default="same",
                   help="Teredo server: the column's implementation (same, default) or one "
                        "for both")
    p.add_argument("--rate", type=float, default=10_000,
                   help="flood packets/s offered (default 10000: what both relays take in "
                        "without TUN queue drops on a loaded 2-core VM; 0 = as fast as the "
                        "sender goes)")
    p.add_argument("--size", type=int, default=100,
                   help="IPv6 packet size of the flood, bytes (default 100)")
    p.add_argument("--ping-interval", type=float, default=0.2,
                   help="good-peer ping interval, s (default 0.2)")
    p.add_argument("--pre", type=float, default=3.0,
                   help="seconds of good-peer pings before the flood (default 3)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds after the flood before the 'after' reading (default 10)")
    p.add_argument("--expire-wait", type=float, default=70.0,
                   help="then seconds more until the 'expired' reading, 0 to skip (default 70:"
                        " relay entries live 30-60 s)")
    p.add_argument("--prefix", default="", help="namespace-name prefix (default fl<pid>)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep-logs", action="store_true", help="keep the run directory")
    p.add_argument("--report", type=Path, metavar="FLOOD.json",
                   help="measure nothing: rewrite the table of a results file (its .md and "
                        "summary) from the raw rounds it holds, e.g. after rows were added")
    a = p.parse_args(argv)
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    bad = [i for i in a.impls if i not in IMPLS]
    if bad or not a.impls:
        p.error(f"--impls: a comma-separated list of {', '.join(IMPLS)}")
    if not 0 < a.destinations <= MAX_DESTINATIONS:
        p.error(f"--destinations: 1-{MAX_DESTINATIONS}")
    if a.size < 48 or a.size > 1280:
        p.error("--size: 48-1280 bytes (IPv6 + UDP headers, Teredo MTU)")
    return a


def _terminate(signum, frame):  # signal handler signature
    raise KeyboardInterrupt


def rewrite_report(js: Path) -> int:
    """`--report`: the summary and the markdown of an existing results file, again."""
    doc = json.loads(js.read_text())
    impls = list(dict.fromkeys(r["impl"] for r in doc["runs"]))
    doc["summary"] = summarize(doc["runs"], impls)
    text = markdown(doc["meta"], doc["runs"], doc["summary"], impls)
    js.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    js.with_suffix(".md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        return rewrite_report(a.report)
    if os.geteuid() != 0:
        print("python -m bench.flood: needs root (network namespaces, TUN)", file=sys.stderr)
        return 2
    if "miredo" in a.impls or a.server == "miredo":
        missing = h.debian_miredo_missing()
        if missing:
            print(f"python -m bench.flood: {missing}", file=sys.stderr)
            return 2
    from bench.__main__ import compile_engine

    compile_engine()
    old = signal.signal(signal.SIGTERM, _terminate)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = Path(tempfile.mkdtemp(prefix="teredo-flood."))
    os.chmod(run_dir, 0o755)  # miredo drops to its own user and must read its config
    meta = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **machine_meta(),
            "destinations": a.destinations,
            "command": "python -m bench.flood " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
            "settings": f"{a.destinations} destinations, {a.size}-byte packets at "
                        f"{a.rate:g} packets/s offered; {a.rounds} round(s) of "
                        f"{','.join(a.impls)}; server {a.server}; ping every "
                        f"{a.ping_interval:g} s; {a.pre:g} s before, {a.settle:g} s settle, "
                        f"{a.expire_wait:g} s expiry wait; load average at start "
                        f"{os.getloadavg()[0]:.1f}"}
    runs: list[dict] = []
    interrupted = False
    try:
        for rnd in range(1, a.rounds + 1):
            for impl in a.impls:
                runs.append(run_one(impl, rnd, a, run_dir, _log))
    except KeyboardInterrupt:
        interrupted = True
        meta["settings"] += " (INTERRUPTED)"
        _log("interrupted: everything started was stopped; writing what was measured")
    finally:
        signal.signal(signal.SIGTERM, old)
    rows = summarize(runs, a.impls)
    a.out.mkdir(parents=True, exist_ok=True)
    md, js = a.out / f"flood-{stamp}.md", a.out / f"flood-{stamp}.json"
    text = markdown(meta, runs, rows, a.impls)
    md.write_text(text)
    js.write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs}, indent=1,
                             default=str) + "\n")
    print(text)
    _log(f"results: {md} and {js}")
    failed = [r for r in runs if r["status"] != "ok"]
    if a.keep_logs or failed:
        _log(f"raw logs (configs, daemon logs, ping output) kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
