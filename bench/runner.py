"""Set up one lab per relay implementation, then measure them in alternation.

Each implementation gets its own complete lab (server, relay under test, client, iperf3
server), all built before the first measurement. The measurements then alternate: run 1 on
miredo, run 1 on ours, run 2 on miredo, ... This is what "side by side" means on a shared,
noisy 2-core machine: a burst of load from someone else hits both columns alike instead of
whichever block happened to run at that moment. An idle lab costs nothing measurable.

Anything that fails for one implementation (a relay that does not start, a client that does
not qualify, a relay that dies mid-test) marks that implementation failed with the reason,
tears its lab down at once, and the others go on: a broken "ours" must not cost the miredo
numbers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import profile
from bench.daemons import implementation, start_client_timed, stop
from bench.measure import (
    IPERF_TESTS,
    PING_PATHS,
    TunnelPath,
    ns_exec,
    ping_target,
    run_iperf,
    run_ping,
    run_ping_at_load,
    warm_path,
)
from bench.procs import Proc, ProcessGroup, tree_memory_kib, wait_until
from teredolab import netns
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel import harness as h

Log = Callable[[str], None]


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
    prefix: str = ""
    profile: bool = False
    fleet: int = 20



def new_result(impl: str, settings: Settings) -> dict:
    return {"impl": impl, "status": "running", "qualify": [], "iperf": [], "ping": [],
            "memory": {}, "client": settings.client, "server": settings.server}


class SetupFailed(RuntimeError):
    """One implementation's lab or daemons could not be brought into a measurable state."""


@dataclass
class Setup:
    """One implementation's running lab; `res` collects its measurements."""

    impl: str
    res: dict
    dir: Path
    lab: NetnsLab
    stack: h.Stack
    relay_impl: h.Implementation
    group: ProcessGroup = field(init=False)
    relay: h.Daemon | None = None
    path: TunnelPath | None = None
    iperf_server: Proc | None = None
    down: bool = False

    def __post_init__(self) -> None:
        self.group = ProcessGroup(self.dir)

    @property
    def live(self) -> bool:
        return not self.down and self.res["status"] == "running"

    def fail(self, why: str, log: Log) -> None:
        self.res["status"] = f"failed: {why}"
        log(f"[{self.impl}] FAILED: {why}")
        self.teardown()

    def teardown(self) -> None:
        if self.down:
            return
        self.down = True
        try:
            self.group.stop_all()
            self.stack.stop()
        finally:
            self.lab.down()


def _prefix(settings: Settings, tag: str) -> str:
    return f"{settings.prefix or f'bn{os.getpid() % 100000}'}{tag}-"


def prepare(impl: str, settings: Settings, run_dir: Path, res: dict, log: Log,
            relay_impl: h.Implementation | None = None, tag: str | None = None) -> Setup:
    """Build the lab and start server and relay (the client comes after qualification)."""
    sdir = run_dir / (tag or impl)
    sdir.mkdir(parents=True, exist_ok=True)
    lab = NetnsLab(LabSpec(prefix=_prefix(settings, tag or impl[0]), with_client2=False))
    s = Setup(impl, res, sdir, lab, h.Stack(lab, sdir), relay_impl or implementation(impl))
    try:
        log(f"[{impl}] building lab {lab.spec.prefix}*")
        lab.up()
        h.start_server(s.stack, implementation(settings.server))
        s.relay = h.start_relay(s.stack, s.relay_impl)
        time.sleep(1.0)
        res["memory"]["relay_idle"] = tree_memory_kib(s.relay.pid or 0)
        log(f"[{impl}] relay up (pid {s.relay.pid}, RSS "
            f"{res['memory']['relay_idle']['rss_kib']} KiB)")
    except KeyboardInterrupt:
        s.teardown()
        raise
    except Exception as e:
        s.fail(str(e), log)
    return s


def qualify(s: Setup, run: int, client_impl: str, log: Log) -> None:
    """One qualification: a fresh client from launch to its address, then stopped."""
    if not s.live or any("error" in r for r in s.res["qualify"]):
        return  # one failure says it all; do not wait out the timeout again
    s.res["qual_client"] = client_impl
    row: dict = {"run": run, "client": client_impl}
    try:
        d, secs, addr = start_client_timed(s.stack, implementation(client_impl), f"q{run}")
        row.update(seconds=secs, address=addr)
        stop(s.stack, d)
        wait_until(lambda: not h.link_exists(s.lab, "cli", s.lab.spec.teredo_if), 5, 0.05)
        log(f"[{s.impl}] qualification run {run} ({client_impl} client): "
            f"{'untimed' if secs is None else f'{secs:.3f} s'}")
    except h.HarnessError as e:
        row["error"] = str(e)
        log(f"[{s.impl}] qualification of the {client_impl} client failed: {e}")
        for d in [d for d in s.stack.daemons if d.name == f"q{run}"]:
            stop(s.stack, d)
    s.res["qualify"].append(row)


def connect(s: Setup, client_impl: str, log: Log) -> None:
    """Start the traffic client and the iperf3 server, and open the path both ways."""
    if not s.live:
        return
    try:
        client, _, addr = start_client_timed(s.stack, implementation(client_impl), "cli")
        assert s.relay is not None
        s.path = TunnelPath(s.lab.ns("rly"), s.lab.ns("cli"), s.lab.ns("v6"), s.relay, client,
                            addr, s.lab.spec)
        log(f"[{s.impl}] {client_impl} client qualified: {addr}")
        if not warm_path(s.path):
            raise SetupFailed("no ping through the tunnel (v6 host <-> client); relay log: "
                              f"{s.relay.log_tail()}")
        s.iperf_server = s.group.start("iperf3-server", s.lab.ns("cli"),
                                       ["iperf3", "-s", "-B", addr])
        if wait_until(lambda: ":5201" in ns_exec(s.lab.ns("cli"), ["ss", "-Hltn"]).stdout,
                      5, 0.05) is None:
            raise SetupFailed(f"iperf3 server did not listen: {s.iperf_server.tail()}")
    except KeyboardInterrupt:
        raise
    except Exception as e:
        s.fail(str(e), log)


def iperf(s: Setup, key: str, run: int, duration: float, log: Log) -> None:
    if not s.live or s.path is None:
        return
    row = run_iperf(s.path, IPERF_TESTS[key], run, duration, s.dir)
    s.res["iperf"].append(row)
    log(f"[{s.impl}] {key} run {run}: " + iperf_line(row))
    if s.relay is not None and not s.relay.alive():
        s.fail(f"relay exited during {key}: {s.relay.log_tail()}", log)


def ping(s: Setup, run: int, settings: Settings) -> None:
    if not s.live or s.path is None:
        return
    for label, role, which in PING_PATHS:
        s.res["ping"].append(run_ping(s.path, label, s.lab.ns(role), ping_target(s.path, which),
                                      run, settings.ping_count, settings.ping_interval, s.dir))


def ping_at_load(s: Setup, run: int, settings: Settings) -> None:
    if not s.live or s.path is None:
        return
    s.res["ping"].append(run_ping_at_load(s.path, run, settings.ping_count,
                                          settings.ping_interval, s.dir))


def finish(s: Setup) -> None:
    """Peak memory after the load, then everything down; a setup still live is "ok"."""
    if s.live and s.relay is not None:
        s.res["memory"]["relay_after"] = tree_memory_kib(s.relay.pid or 0)
        alive = s.relay.alive()
        s.res["status"] = "ok" if alive else f"failed: relay exited: {s.relay.log_tail()}"
    s.teardown()


def run_all(settings: Settings, run_dir: Path, blocks: dict[str, dict], log: Log) -> None:
    """The comparison: every implementation in `settings.relays`, measured in alternation."""
    setups: list[Setup] = []
    try:
        for impl in settings.relays:
            blocks[impl] = new_result(impl, settings)
            setups.append(prepare(impl, settings, run_dir, blocks[impl], log))
        for run in range(1, settings.qual_runs + 1):
            for s in setups:
                qualify(s, run, s.impl if settings.qual_client == "same"
                        else settings.qual_client, log)
        for s in setups:
            connect(s, settings.client, log)
        for key in settings.tests:
            for run in range(1, settings.runs + 1):
                for s in setups:
                    iperf(s, key, run, settings.duration, log)
                    time.sleep(1.0)
        for run in range(1, settings.runs + 1):
            for s in setups:
                ping(s, run, settings)
        log("ping done")
        for run in range(1, settings.runs + 1):
            for s in setups:
                ping_at_load(s, run, settings)
        log("ping at load done")
        if settings.profile:
            for s in setups:
                if s.impl == "ours":
                    profile_run(s, settings.duration, log)
        for s in setups:
            finish(s)
        if settings.fleet > 0:
            for s in setups:
                fleet(s.impl, settings, run_dir, s.res, log)
    except KeyboardInterrupt:
        for s in setups:
            if s.res["status"] == "running":
                s.res["status"] = "interrupted"
        raise
    finally:
        for s in setups:
            try:
                s.teardown()
            except Exception as e:
                log(f"[{s.impl}] teardown: {e}")


def profile_run(s: Setup, duration: float, log: Log) -> None:
    """One extra TCP v6 -> client run with py-spy sampling our relay's worker."""
    if not s.live or s.path is None or s.relay is None:
        return
    out = s.dir / "relay.pyspy.txt"
    spy = profile.start(profile.worker_pid(s.relay.pid or 0), duration, out)
    if spy is None:
        s.res["profile"] = {"note": "py-spy is not installed (pip install py-spy, or "
                                    "pip install -e '.[bench]')"}
        return
    time.sleep(0.5)  # let py-spy attach before the traffic starts
    row = run_iperf(s.path, IPERF_TESTS["tcp-fwd"], 0, duration, s.dir)
    log(f"[{s.impl}] profiled tcp-fwd run: " + iperf_line(row))
    try:
        _, err = spy.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    raw = out.read_text() if out.exists() else ""
    note = "" if raw else f"py-spy wrote nothing: {(err or '').strip().splitlines()[-1:]}"
    s.res["profile"] = {"row": row, "summary": profile.summarize(raw), "note": note}


def iperf_line(row: dict) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    extra = (f", loss {row['loss_pct']:.2f} %" if row.get("loss_pct") is not None
             else f", retrans {row['retransmits']}" if "retransmits" in row else "")
    return (f"{row['mbit_s']:.1f} Mbit/s{extra}, relay CPU {row['relay_cpu_pct']:.1f} %, "
            f"client CPU {row['client_cpu_pct']:.1f} %")


FLEET_IP = "203.0.113.20"


def fleet(impl: str, settings: Settings, run_dir: Path, res: dict, log: Log) -> None:
    """`settings.fleet` idle relays of one implementation side by side in one namespace, and
    the total PSS of all their process trees: what a fleet of relays costs the machine.

    Every relay has its own interface, port, pid file and status socket, the same Teredo
    prefix (a second route to it is EEXIST, which both implementations accept), as a fleet
    of instances on one host has. PSS splits the pages the instances share (the interpreter
    and libraries on disk), so the sum is the fleet's real cost, which RSS would overstate.
    """
    n = settings.fleet
    ns = _prefix(settings, f"f{impl[0]}") + "fleet"
    fdir = run_dir / f"fleet-{impl}"
    fdir.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(fdir)
    relay_impl = implementation(impl)
    out: dict = {"n": n}
    try:
        netns.add(ns)
        for argv in (["link", "add", "f0", "type", "veth", "peer", "name", "f1"],
                     ["addr", "add", f"{FLEET_IP}/24", "dev", "f0"],
                     ["link", "set", "f0", "up"], ["link", "set", "f1", "up"]):
            subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True)
        daemons: list[Proc] = []
        for i in range(n):
            conf = fdir / f"relay{i}.conf"
            conf.write_text(f"RelayType cone\nInterfaceName tfl{i}\nPrefix 2001:0::\n"
                            f"BindAddress {FLEET_IP}\nBindPort {4000 + i}\n")
            argv = relay_impl.argv("relay", conf, fdir / f"relay{i}.pid", fdir / f"relay{i}.sock")
            daemons.append(group.start(f"relay{i}", ns, argv,
                                       env={**os.environ, **relay_impl.env}))
        links = lambda: subprocess.run(["ip", "-n", ns, "-o", "link", "show"],  # noqa: E731
                                       capture_output=True, text=True).stdout.count(": tfl")
        wait_until(lambda: links() >= n or any(not d.alive() for d in daemons), 60, 0.1)
        time.sleep(1.5)  # let every instance settle, as for the single relay's idle figure
        dead = [d for d in daemons if not d.alive()]
        if dead:
            out["error"] = f"{len(dead)} of {n} relays exited: {dead[0].tail()}"
        else:
            total: dict[str, int] = {}
            for d in daemons:
                for k, v in tree_memory_kib(d.pid).items():
                    total[k] = total.get(k, 0) + v
            out.update(total)
        log(f"[{impl}] fleet of {n} relays: "
            + (out["error"] if "error" in out else f"PSS {out['pss_kib']} KiB"))
    except (OSError, subprocess.CalledProcessError) as e:
        out["error"] = str(e)
        log(f"[{impl}] fleet failed: {e}")
    finally:
        group.stop_all()
        netns.delete(ns)
    res["memory"]["fleet"] = out
