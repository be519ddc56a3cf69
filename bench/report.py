"""Turn the per-block results into the comparison table, and write markdown + JSON.

Every headline measure is a median over runs. Ratios are ours / miredo; the "better" column
says which direction wins, and the verdict words it, because a ratio alone is ambiguous for
losses of zero and for lower-is-better measures.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import LOAD_PATH
from bench.stats import median, ratio, verdict

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Measure:
    key: str
    title: str
    unit: str
    better: str  # "higher" | "lower"
    get: Callable[[dict], float | None]
    digits: int = 1


def _iperf(res: dict, test: str, field: str) -> float | None:
    return median(r.get(field) for r in res.get("iperf", [])
                  if r["test"] == test and "error" not in r)


def _per_core(res: dict, test: str) -> float | None:
    return median(r["mbit_s"] / (r["relay_cpu_pct"] / 100.0) for r in res.get("iperf", [])
                  if r["test"] == test and "error" not in r and r.get("relay_cpu_pct"))


def _ping(res: dict, path: str, field: str = "median_ms") -> float | None:
    return median(r.get(field) for r in res.get("ping", [])
                  if r["path"] == path and "error" not in r)


def _added_rtt(res: dict) -> float | None:
    tunnel, a, b = (_ping(res, p) for p in ("tunnel v6->cli", "plain v6->rly", "plain cli->rly"))
    if None in (tunnel, a, b):
        return None
    return tunnel - a - b


def _qual(res: dict) -> float | None:
    return median(r.get("seconds") for r in res.get("qualify", []) if "error" not in r)


def _mem(res: dict, when: str, field: str) -> float | None:
    return res.get("memory", {}).get(when, {}).get(field)


MEASURES = (
    Measure("tcp_fwd", "TCP v6 host -> client", "Mbit/s", "higher",
            lambda r: _iperf(r, "tcp-fwd", "mbit_s")),
    Measure("tcp_rev", "TCP client -> v6 host", "Mbit/s", "higher",
            lambda r: _iperf(r, "tcp-rev", "mbit_s")),
    Measure("udp_rate_loss", "UDP 100 Mbit/s v6 host -> client, loss", "%", "lower",
            lambda r: _iperf(r, "udp-rate", "loss_pct"), 2),
    Measure("udp_max", "UDP flat out v6 host -> client, received", "Mbit/s", "higher",
            lambda r: _iperf(r, "udp-max", "mbit_s")),
    Measure("udp_max_rev", "UDP flat out client -> v6 host, received", "Mbit/s", "higher",
            lambda r: _iperf(r, "udp-max-rev", "mbit_s")),
    Measure("rtt_v6_cli", "RTT through the tunnel v6 host -> client (median)", "ms", "lower",
            lambda r: _ping(r, "tunnel v6->cli"), 3),
    Measure("rtt_cli_v6", "RTT through the tunnel client -> v6 host (median)", "ms", "lower",
            lambda r: _ping(r, "tunnel cli->v6"), 3),
    Measure("rtt_added", "RTT added by the tunnel (tunnel - plain segments)", "ms", "lower",
            _added_rtt, 3),
    Measure("rtt_load", "RTT through the tunnel v6 host -> client while UDP 100 Mbit/s flows "
            "(median)", "ms", "lower", lambda r: _ping(r, LOAD_PATH), 3),
    Measure("cpu_tcp_fwd", "relay CPU during TCP v6 host -> client", "% of a core", "lower",
            lambda r: _iperf(r, "tcp-fwd", "relay_cpu_pct")),
    Measure("cpu_udp_rate", "relay CPU at UDP 100 Mbit/s (same load for both)", "% of a core",
            "lower", lambda r: _iperf(r, "udp-rate", "relay_cpu_pct")),
    Measure("per_core_tcp_fwd", "TCP v6 host -> client per relay core", "Mbit/s per core",
            "higher", lambda r: _per_core(r, "tcp-fwd")),
    Measure("qual", "qualification, launch -> address (client = column's impl)", "s", "lower",
            _qual, 3),
    Measure("rss_idle", "relay RSS idle (process tree)", "KiB", "lower",
            lambda r: _mem(r, "relay_idle", "rss_kib"), 0),
    Measure("pss_idle", "relay PSS idle (process tree, shared pages split)", "KiB", "lower",
            lambda r: _mem(r, "relay_idle", "pss_kib"), 0),
    Measure("uss_idle", "relay USS idle (process tree, private pages only)", "KiB", "lower",
            lambda r: _mem(r, "relay_idle", "uss_kib"), 0),
    Measure("fleet_pss", "fleet of idle relays (--fleet, default 20), total PSS of all trees",
            "KiB", "lower", lambda r: _mem(r, "fleet", "pss_kib"), 0),
    Measure("rss_peak", "relay peak RSS after the tests (VmHWM, process tree)", "KiB", "lower",
            lambda r: _mem(r, "relay_after", "hwm_kib"), 0),
)

PLAIN = (("plain v6->rly", "plain IPv6 v6 host -> relay (median)"),
         ("plain cli->rly", "plain IPv4 client -> relay via NAT (median)"))


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def summarize(blocks: dict[str, dict]) -> list[dict]:
    """One row per measure: values per implementation, the ratio and the verdict."""
    rows = []
    for m in MEASURES:
        vals = {impl: (m.get(res) if _usable(res) else None) for impl, res in blocks.items()}
        ours, mir = vals.get("ours"), vals.get("miredo")
        tol = 0.0 if m.key == "udp_rate_loss" else 0.02
        rows.append({"key": m.key, "title": m.title, "unit": m.unit, "better": m.better,
                     "values": vals, "ratio": ratio(ours, mir),
                     "verdict": verdict(ours, mir, m.better, tol), "digits": m.digits})
    return rows


def _usable(res: dict) -> bool:
    """Failed blocks still show what they measured before failing."""
    return bool(res.get("iperf") or res.get("qualify") or res.get("ping") or res.get("memory"))


def markdown(meta: dict, blocks: dict[str, dict], rows: list[dict], extras: dict) -> str:
    impls = list(blocks)
    out = [f"# Relay benchmark, {meta['started']}", ""]
    out.append(f"Machine: {meta['machine']}. {meta['versions']}.")
    out.append(f"Settings: {meta['settings']}.")
    out.append("Each column is one implementation in the relay role, each in its own copy of "
               "the same lab with the same traffic and client "
               f"({blocks[impls[0]]['client'] if impls else '-'} client, "
               f"{blocks[impls[0]]['server'] if impls else '-'} server), measured in "
               "alternation in this run (run 1 of every column, then run 2, ...) so that load "
               "from elsewhere on the machine hits every column alike. Values are medians over "
               "runs; CPU % is utime+stime of the relay's process tree over wall time "
               "(100 % = one core).")
    out.append("")
    for impl, res in blocks.items():
        out.append(f"- **{impl}**: {res['status']}")
    out.append("")
    head = "| measure | unit | better | " + " | ".join(impls)
    sep = "|---|---|---|" + "---|" * len(impls)
    if "ours" in impls and "miredo" in impls:
        head += " | ours/miredo | verdict"
        sep += "---|---|"
    out += [head + " |", sep]
    for r in rows:
        line = f"| {r['title']} | {r['unit']} | {r['better']} | " + " | ".join(
            fmt(r["values"].get(i), r["digits"]) for i in impls)
        if "ours" in impls and "miredo" in impls:
            line += f" | {fmt(r['ratio'], 2)} | {r['verdict']}"
        out.append(line + " |")
    out.append("")
    out.append("Plain paths (no tunnel; should not differ between columns, shows the noise): " +
               "; ".join(f"{title}: " + ", ".join(
                   f"{i} {fmt(_ping(blocks[i], key), 3)} ms" for i in impls)
                   for key, title in PLAIN))
    out.append("")
    for impl, res in blocks.items():
        out += _detail(impl, res)
    for title, text in extras.items():
        out += [f"## {title}", "", text, ""]
    return "\n".join(out) + "\n"


def _detail(impl: str, res: dict) -> list[str]:
    out = [f"## {impl}: per test", ""]
    q = res.get("qualify", [])
    if q:
        out.append(f"Qualification ({res.get('qual_client')} client), runs: " + ", ".join(
            (fmt(r.get("seconds"), 3) + " s") if "error" not in r else "FAILED" for r in q))
        errs = [r["error"] for r in q if "error" in r]
        if errs:
            out.append(f"  error: {errs[0]}")
        out.append("")
    rows = res.get("iperf", [])
    if rows:
        out.append("| test | runs | recv Mbit/s (per run) | sender Mbit/s | loss % | TCP retrans "
                   "| relay CPU % (user/sys) | client CPU % "
                   "| relay UDP datagrams/s (a GSO send counts once) "
                   "| drops relay tun / relay UDP rcvbuf / client tun / client UDP rcvbuf |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for test in dict.fromkeys(r["test"] for r in rows):
            rs = [r for r in rows if r["test"] == test]
            ok = [r for r in rs if "error" not in r]

            def g(k: str, rows_: list[dict] = ok) -> float | None:
                return median(r.get(k) for r in rows_)

            per = ", ".join(fmt(r.get("mbit_s")) if "error" not in r else "ERR" for r in rs)
            out.append(
                f"| {test} | {len(ok)}/{len(rs)} | {fmt(g('mbit_s'))} ({per}) | "
                f"{fmt(g('sent_mbit_s'))} | {fmt(g('loss_pct'), 2)} | "
                f"{fmt(g('retransmits'), 0)} | {fmt(g('relay_cpu_pct'))} "
                f"({fmt(g('relay_user_pct'))}/{fmt(g('relay_sys_pct'))}) | "
                f"{fmt(g('client_cpu_pct'))} | {fmt(g('relay_pps'), 0)} | "
                f"{fmt(g('relay_tun_txdrop'), 0)} / {fmt(g('relay_udp_rcvbuf_err'), 0)} / "
                f"{fmt(g('client_tun_txdrop'), 0)} / {fmt(g('client_udp_rcvbuf_err'), 0)} |")
        errs = [f"{r['test']} run {r['run']}: {r['error']}" for r in rows if "error" in r]
        if errs:
            out.append("")
            out += [f"- {e}" for e in errs]
        out.append("")
    pings = res.get("ping", [])
    if pings:
        out.append("| RTT path | runs | received | min ms | median ms | avg ms | p90 ms "
                   "| max ms |")
        out.append("|---|---|---|---|---|---|---|---|")
        for path in dict.fromkeys(r["path"] for r in pings):
            rs = [r for r in pings if r["path"] == path and "error" not in r]
            out.append(f"| {path} | {len(rs)} | {fmt(median(r.get('received') for r in rs), 0)}"
                       f"/{fmt(median(r.get('sent') for r in rs), 0)} | "
                       + " | ".join(fmt(median(r.get(k) for r in rs), 3)
                                    for k in ("min_ms", "median_ms", "avg_ms", "p90_ms",
                                              "max_ms")) + " |")
        out.append("")
    mem = res.get("memory", {})
    if mem:
        out.append("Memory (KiB, summed over the relay's process tree): " + "; ".join(
            f"{k}: RSS {v.get('rss_kib')} / peak {v.get('hwm_kib')} / PSS {v.get('pss_kib')} / "
            f"USS {v.get('uss_kib')}" for k, v in mem.items()))
        out.append("")
    return out


def machine_meta() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (res.stdout or res.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "machine": f"{os.cpu_count()} CPU ({model}), kernel {platform.release()}, "
                   f"Python {platform.python_version()}",
        "versions": ", ".join([first(["dpkg-query", "-W", "-f", "miredo ${Version}", "miredo"]),
                               first(["iperf3", "--version"]).split(" (")[0],
                               "ours at git " + first(["git", "-C", str(ROOT), "describe",
                                                       "--always", "--dirty"]),
                               "ours' " + data_path()]),
    }


def data_path() -> str:
    """Which relay data path our engine runs here (compiled or Python: `TEREDO_FASTPATH`, a
    module not built), as `teredo-engine -V` says it; the engines inherit this environment."""
    import sys

    try:
        res = subprocess.run([sys.executable, "-m", "engine", "-V"], capture_output=True,
                             text=True, check=False, cwd=str(ROOT))
    except OSError:
        return "data path: ?"
    return next((ln.strip() for ln in res.stdout.splitlines() if ln.startswith("data path:")),
                "data path: ?")


def write(out_dir: Path, stamp: str, meta: dict, blocks: dict[str, dict], rows: list[dict],
          extras: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"bench-{stamp}.md"
    js = out_dir / f"bench-{stamp}.json"
    md.write_text(markdown(meta, blocks, rows, extras))
    js.write_text(json.dumps({"meta": meta, "summary": rows, "blocks": blocks,
                              "extras": extras}, indent=1, default=str) + "\n")
    return md, js
