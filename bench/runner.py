"""One benchmark block per implementation, run one after the other in the same invocation.

A block builds a fresh lab (so both relays start from the same empty conntrack tables and
neighbour caches), starts the server, the relay under test and a client, and measures
qualification, throughput, RTT, CPU and memory. Anything that fails inside a block marks that
block failed with the reason and the rest of the run goes on: a broken "ours" must not cost
the miredo numbers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.daemons import (
    DaemonError,
    Launcher,
    link_exists,
    start_client_timed,
    wait_relay,
    wait_server,
)
from bench.measure import (
    IPERF_TESTS,
    PING_PATHS,
    TunnelPath,
    ns_exec,
    ping_target,
    run_iperf,
    run_ping,
    warm_path,
)
from bench.plan import PLAN
from bench.procs import ProcessGroup, tree_memory_kib, wait_until
from bench.topology import check_plan, make_topology


@dataclass
class Settings:
    relays: list[str]
    client: str = "miredo"
    server: str = "miredo"
    qual_client: str = "same"
    runs: int = 3
    duration: float = 10.0
    qual_runs: int = 5
    tests: list[str] = field(default_factory=lambda: list(IPERF_TESTS))
    ping_count: int = 100
    ping_interval: float = 0.01
    topology: str = "auto"
    prefix: str = ""
    profile: bool = False


Log = Callable[[str], None]


def _block_prefix(settings: Settings, tag: str) -> str:
    base = settings.prefix or f"bn{os.getpid() % 100000}"
    return f"{base}{tag}-"


def new_result(impl: str, settings: Settings) -> dict:
    return {"impl": impl, "status": "running", "qualify": [], "iperf": [], "ping": [],
            "memory": {}, "client": settings.client, "server": settings.server}


def run_block(impl: str, settings: Settings, run_dir: Path, log: Log,
              profile_out: Path | None = None, res: dict | None = None) -> dict:
    """Measure one relay implementation into `res` (made here if not given) and return it.

    Failures are recorded in res["status"], never raised; only KeyboardInterrupt propagates,
    after cleanup, with what was measured so far already in the caller's `res`.
    """
    block_dir = run_dir / (impl + ("-profile" if profile_out else ""))
    block_dir.mkdir(parents=True, exist_ok=True)
    if res is None:
        res = new_result(impl, settings)
    topo = make_topology(_block_prefix(settings, impl[0] + ("p" if profile_out else "")),
                         settings.topology)
    group = ProcessGroup(block_dir)
    launcher = Launcher(group, block_dir)
    try:
        log(f"[{impl}] building the lab ({type(topo).__name__})")
        topo.up()
        check_plan(topo)
        srv = launcher.start(settings.server, "server", topo.ns("srv"), "server")
        wait_server(srv, topo.ns("srv"))
        relay = launcher.start(impl, "relay", topo.ns("rly"), "relay", profile_out)
        wait_relay(relay, topo.ns("rly"))
        time.sleep(1.0)
        res["memory"]["relay_idle"] = tree_memory_kib(relay.pid)
        log(f"[{impl}] relay up, pid {relay.pid}, RSS {res['memory']['relay_idle']['rss_kib']} KiB")

        if not profile_out:
            _qualification(impl, settings, launcher, topo.ns("cli"), res, log)

        client, _, addr = start_client_timed(launcher, settings.client, topo.ns("cli"), "cli")
        log(f"[{impl}] {settings.client} client qualified: {addr}")
        path = TunnelPath(topo.ns("rly"), topo.ns("cli"), topo.ns("v6"), relay, client, addr)
        if not warm_path(path):
            raise RuntimeError("no ping through the tunnel (v6 host <-> client) after 3 tries; "
                               f"relay log: {relay.tail()}")
        iperf_s = group.start("iperf3-server", topo.ns("cli"), ["iperf3", "-s", "-B", addr])
        if wait_until(lambda: "5201" in ns_exec(topo.ns("cli"), ["ss", "-Hltn"]).stdout,
                      5, 0.05) is None:
            raise RuntimeError(f"iperf3 server did not listen: {iperf_s.tail()}")
        tests = ["tcp-fwd"] if profile_out else settings.tests
        runs = 1 if profile_out else settings.runs
        for key in tests:
            for i in range(1, runs + 1):
                row = run_iperf(path, IPERF_TESTS[key], i, settings.duration, block_dir)
                res["iperf"].append(row)
                log(f"[{impl}] {key} run {i}: " + _iperf_line(row))
                if not relay.alive():
                    raise RuntimeError(f"relay exited during {key}: {relay.tail()}")
                time.sleep(1.0)
        group.stop(iperf_s)
        if not profile_out:
            for i in range(1, settings.runs + 1):
                for label, role, which in PING_PATHS:
                    row = run_ping(path, label, topo.ns(role), ping_target(path, which), i,
                                   settings.ping_count, settings.ping_interval, block_dir)
                    res["ping"].append(row)
            log(f"[{impl}] ping done")
        res["memory"]["relay_after"] = tree_memory_kib(relay.pid)
        if not relay.alive():
            raise RuntimeError(f"relay exited: {relay.tail()}")
        res["status"] = "ok"
    except KeyboardInterrupt:
        res["status"] = "interrupted"
        raise
    except Exception as e:  # the block is reported failed, the run goes on
        res["status"] = f"failed: {e}"
        log(f"[{impl}] FAILED: {e}")
    finally:
        group.stop_all()
        topo.down()
    return res


def _qualification(impl: str, settings: Settings, launcher: Launcher, cli_ns: str,
                   res: dict, log: Log) -> None:
    """Launch -> address, `qual_runs` times, each with a fresh client process."""
    client_impl = impl if settings.qual_client == "same" else settings.qual_client
    res["qual_client"] = client_impl
    ifname = PLAN.teredo_if
    for i in range(1, settings.qual_runs + 1):
        row: dict = {"run": i, "client": client_impl}
        try:
            proc, secs, addr = start_client_timed(launcher, client_impl, cli_ns, f"q{i}")
            row.update(seconds=secs, address=addr)
            launcher.group.stop(proc)
        except DaemonError as e:
            row["error"] = str(e)
            res["qualify"].append(row)
            log(f"[{impl}] qualification of the {client_impl} client failed: {e}")
            return
        finally:
            for p in list(launcher.group.procs):
                if p.name == f"q{i}":
                    launcher.group.stop(p)
        res["qualify"].append(row)
        log(f"[{impl}] qualification run {i} ({client_impl} client): {secs} s")
        wait_until(lambda: not link_exists(cli_ns, ifname), 5, 0.05)


def _iperf_line(row: dict) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    extra = (f", loss {row['loss_pct']:.2f} %" if row.get("loss_pct") is not None
             else f", retrans {row['retransmits']}" if "retransmits" in row else "")
    return (f"{row['mbit_s']:.1f} Mbit/s{extra}, relay CPU {row['relay_cpu_pct']:.1f} %, "
            f"client CPU {row['client_cpu_pct']:.1f} %")
