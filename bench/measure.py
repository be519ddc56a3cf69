"""The measurements: iperf3 through the relay, ping RTT, and the counters around them.

Every traffic generator runs inside the lab: the native IPv6 host (v6) is the iperf3 client
and the Teredo client's namespace runs the iperf3 server bound to the Teredo address, so the
bytes go v6 -> relay -> NAT -> client (and back with -R). CPU is read as utime+stime of the
relay's whole process tree before and after, and the kernel's drop counters say which queue
overflowed when a run loses packets.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import CLK_TCK, tree_cpu_split, tree_cpu_ticks
from bench.stats import ParseError, parse_iperf, parse_ping
from teredolab.topology import LabSpec
from tests.kernel.harness import Daemon


@dataclass(frozen=True)
class IperfTest:
    key: str
    title: str
    args: tuple[str, ...]


UDP_LEN = "1200"  # 1248-byte IPv6 packets: fit the 1280 Teredo MTU
UDP_RATE = "100M"

IPERF_TESTS = {
    t.key: t
    for t in (
        IperfTest("tcp-fwd", "TCP v6 host -> client", ()),
        IperfTest("tcp-rev", "TCP client -> v6 host (-R)", ("-R",)),
        IperfTest("udp-rate", f"UDP {UDP_RATE}bit/s v6 host -> client",
                  ("-u", "-b", UDP_RATE, "-l", UDP_LEN)),
        IperfTest("udp-max", "UDP flat out v6 host -> client",
                  ("-u", "-b", "0", "-l", UDP_LEN)),
        IperfTest("udp-max-rev", "UDP flat out client -> v6 host (-R)",
                  ("-u", "-b", "0", "-l", UDP_LEN, "-R")),
    )
}

LOAD_PATH = "tunnel v6->cli at UDP 100M"
"""The RTT-at-load ping: v6 host -> client while iperf3 sends 100 Mbit/s of UDP the same way."""

PING_PATHS = (
    ("tunnel v6->cli", "v6", "teredo"),
    ("tunnel cli->v6", "cli", "v6_host"),
    ("plain v6->rly", "v6", "rly_ip6"),
    ("plain cli->rly", "cli", "rly_ip4"),
)


def ns_exec(ns: str, argv: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def udp_counters(ns: str) -> dict[str, int]:
    """The Udp: line of the namespace's /proc/net/snmp (InDatagrams, RcvbufErrors, ...)."""
    lines = [ln.split() for ln in ns_exec(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


def link_stat(ns: str, ifname: str, stat: str) -> int:
    out = ns_exec(ns, ["cat", f"/sys/class/net/{ifname}/statistics/{stat}"]).stdout.strip()
    return int(out) if out.isdigit() else 0


@dataclass
class TunnelPath:
    """The running pair under test: namespaces, the relay and client daemons, the address."""

    rly_ns: str
    cli_ns: str
    v6_ns: str
    relay: Daemon
    client: Daemon
    address: str
    spec: LabSpec

    def snapshot(self) -> dict[str, int]:
        r, c = udp_counters(self.rly_ns), udp_counters(self.cli_ns)
        ifn = self.spec.teredo_if
        r_user, r_sys = tree_cpu_split(self.relay.pid or 0)
        return {
            "relay_ticks": r_user + r_sys,
            "relay_user_ticks": r_user,
            "relay_sys_ticks": r_sys,
            "client_ticks": tree_cpu_ticks(self.client.pid or 0),
            "relay_udp_in": r.get("InDatagrams", 0),
            "relay_udp_out": r.get("OutDatagrams", 0),
            "relay_udp_rcvbuf_err": r.get("RcvbufErrors", 0),
            "client_udp_rcvbuf_err": c.get("RcvbufErrors", 0),
            "relay_tun_txdrop": link_stat(self.rly_ns, ifn, "tx_dropped"),
            "client_tun_txdrop": link_stat(self.cli_ns, ifn, "tx_dropped"),
        }


def run_iperf(p: TunnelPath, test: IperfTest, run: int, duration: float, out_dir: Path) -> dict:
    """One iperf3 run; the row carries an `error` instead of numbers when it failed."""
    row: dict = {"test": test.key, "run": run}
    before, t0 = p.snapshot(), time.monotonic()
    argv = ["iperf3", "-c", p.address, "-t", f"{duration:g}", "-J", *test.args]
    try:
        res = ns_exec(p.v6_ns, argv, timeout=duration + 30)
        stdout = res.stdout
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    wall = time.monotonic() - t0
    after = p.snapshot()
    (out_dir / f"iperf-{test.key}-{run}.json").write_text(stdout)
    try:
        row.update(parse_iperf(json.loads(stdout)))
    except (ParseError, json.JSONDecodeError) as e:
        row["error"] = str(e).splitlines()[0][:200]
    delta = {k: after[k] - before[k] for k in before}
    row["wall_s"] = wall
    row["relay_cpu_pct"] = 100.0 * delta["relay_ticks"] / CLK_TCK / wall
    row["relay_user_pct"] = 100.0 * delta["relay_user_ticks"] / CLK_TCK / wall
    row["relay_sys_pct"] = 100.0 * delta["relay_sys_ticks"] / CLK_TCK / wall
    row["client_cpu_pct"] = 100.0 * delta["client_ticks"] / CLK_TCK / wall
    row["relay_pps"] = (delta["relay_udp_in"] + delta["relay_udp_out"]) / wall
    for k in ("relay_udp_rcvbuf_err", "client_udp_rcvbuf_err", "relay_tun_txdrop",
              "client_tun_txdrop"):
        row[k] = delta[k]
    return row


def ping_target(p: TunnelPath, which: str) -> str:
    return p.address if which == "teredo" else getattr(p.spec, which)


def run_ping(p: TunnelPath, label: str, role_ns: str, target: str, run: int, count: int,
             interval: float, out_dir: Path) -> dict:
    row: dict = {"path": label, "run": run}
    fam = "-4" if "." in target else "-6"
    # not -q: the per-packet times give a median, which one stall on this shared machine
    # cannot move the way it moves the average
    res = ns_exec(role_ns, ["ping", fam, "-n", "-c", str(count), "-i", f"{interval:g}",
                            "-W", "2", target], timeout=count * interval + 30)
    safe = label.replace(" ", "_").replace(">", "")
    (out_dir / f"ping-{safe}-{run}.txt").write_text(res.stdout + res.stderr)
    try:
        row.update(parse_ping(res.stdout))
    except ParseError as e:
        row["error"] = str(e)
    return row


def run_ping_at_load(p: TunnelPath, run: int, count: int, interval: float,
                     out_dir: Path) -> dict:
    """The tunnel's RTT while it carries a steady load: ping v6 host -> client while iperf3
    sends UDP at 100 Mbit/s (the `udp-rate` load) on the same path, in the same direction.

    At rest every ping wakes an idle relay; under load it queues behind the data packets of
    the same wake-up, which is the latency a user of a busy relay sees.
    """
    load_s = count * interval + 3.0
    argv = ["ip", "netns", "exec", p.v6_ns, "iperf3", "-c", p.address, "-t", f"{load_s:g}",
            "-J", *IPERF_TESTS["udp-rate"].args]
    iperf = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        time.sleep(1.0)  # let the flow reach its rate before the first ping
        row = run_ping(p, LOAD_PATH, p.v6_ns, p.address, run, count, interval, out_dir)
        try:
            out, _ = iperf.communicate(timeout=load_s + 30)
        except subprocess.TimeoutExpired:
            iperf.kill()
            out, _ = iperf.communicate()
    finally:
        if iperf.poll() is None:
            iperf.kill()
            iperf.wait()
    (out_dir / f"iperf-at-load-{run}.json").write_text(out or "")
    try:
        load = parse_iperf(json.loads(out or "{}"))
        row["load_mbit_s"] = load.get("mbit_s")
        row["load_loss_pct"] = load.get("loss_pct")
    except (ParseError, json.JSONDecodeError) as e:
        row["load_error"] = str(e).splitlines()[0][:200]
    return row


def warm_path(p: TunnelPath) -> bool:
    """Open the path both ways (bubbles, NAT hole, the client's relay choice) before timing."""
    a = ns_exec(p.v6_ns, ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "3",
                          p.address], timeout=30)
    b = ns_exec(p.cli_ns, ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "3",
                           p.spec.v6_host], timeout=30)
    return a.returncode == 0 and b.returncode == 0
