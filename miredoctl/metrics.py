"""The fleet as Prometheus metrics: `miredoctl metrics`, `--textfile`, and the exporter's data.

Why a custom collector that gathers on scrape (and no metric objects kept in between): the
numbers already live elsewhere — supervisord's process table, the restart history the event
listener writes, each engine's status socket (contract §4), the kernel's interface counters for
Debian's miredo — so a scrape asks them once and reports what they say now. Nothing is cached,
so a scrape never shows a value older than itself, and an engine's restarted counters show up
as what Prometheus expects of a counter that restarted (a reset).

The gathering is `miredoctl.status.collect`, the function behind `miredoctl status --json`: one
status-socket request per teredo-engine, `ip`/`ss` in the namespace for miredo. Instances are
gathered in a few threads so that one frozen engine (a 2 s socket timeout) does not add its
timeout to every other instance's scrape.

Families are built by `families()` from plain rows, so tests can feed it rows without engines.
Every name, type and label is documented in docs/metrics.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from miredoctl import status as status_mod
from miredoctl.errors import InventoryError, MiredoctlError
from miredoctl.inventory import Fleet, load_fleet
from miredoctl.kernelview import KernelView
from miredoctl.state import StatePaths, write_atomic
from miredoctl.status import InstanceStatus
from miredoctl.supervisord import SupervisordClient

PREFIX = "teredo"
LABELS = ("instance", "role", "engine")
TEXTFILE_NAME = "miredoctl.prom"  # node_exporter's textfile collector reads *.prom only
GATHER_THREADS = 8
# Every word `status` can put in its STATE column; each instance gets one
# teredo_process_state series per word (1 for the current one), so a query over a state never
# finds "no data" for an instance that is simply not in it.
PROCESS_STATES = ("RUNNING", "STARTING", "BACKOFF", "STOPPING", "STOPPED", "EXITED", "FATAL",
                  "UNKNOWN", "FLAPPING", "UNRESPONSIVE", "DISABLED", "NOT_ADDED", "ORPHAN",
                  "ORPHANED")
# contract §4 counters -> (metric stem, direction); `in` is what the engine read (from the
# network for UDP, from the host's TUN device for TUN), `out` what it wrote
ENGINE_COUNTERS = {
    "udp_in_packets": ("udp_packets", "in"), "udp_in_bytes": ("udp_bytes", "in"),
    "udp_out_packets": ("udp_packets", "out"), "udp_out_bytes": ("udp_bytes", "out"),
    "tun_in_packets": ("tun_packets", "in"), "tun_in_bytes": ("tun_bytes", "in"),
    "tun_out_packets": ("tun_packets", "out"), "tun_out_bytes": ("tun_bytes", "out"),
    "raw6_out_packets": ("raw6_packets", "out"), "raw6_out_bytes": ("raw6_bytes", "out"),
}

COUNTER_HELP = {
    "udp_packets": "UDP datagrams the engine received (in) or sent (out)",
    "udp_bytes": "UDP payload bytes the engine received (in) or sent (out)",
    "tun_packets": "IPv6 packets the engine read from its TUN device (in: from the host into "
                   "the tunnel) or wrote to it (out: from the tunnel to the host)",
    "tun_bytes": "IPv6 bytes the engine read from its TUN device (in) or wrote to it (out)",
    "raw6_packets": "IPv6 packets a server sent on its raw IPv6 socket",
    "raw6_bytes": "IPv6 bytes a server sent on its raw IPv6 socket",
}


@dataclass
class Snapshot:
    """One scrape's worth of facts: rows as `status` computes them, plus the fleet's own."""

    rows: list[InstanceStatus]
    supervisord_up: bool
    inventory_ok: bool
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)
    time: float = field(default_factory=time.time)  # wall clock the rows were computed at


def gather(fleet: Fleet, paths: StatePaths, *, inventory_ok: bool = True,
           threads: int = GATHER_THREADS) -> Snapshot:
    """supervisord's process table once, then every instance's row (status.collect) in parallel.

    Names are the inventory's plus whatever supervisord runs (orphans), as `status` shows them.
    """
    started = time.monotonic()
    errors: list[str] = []
    sup = SupervisordClient(paths, timeout=10.0)
    procs: dict[str, dict[str, Any]] | None = None
    try:
        if sup.running():
            procs = sup.processes()
    except (MiredoctlError, OSError) as exc:
        errors.append(f"supervisord: {exc}")
    finally:
        sup.close()
    names = sorted(set(fleet.names) | set(procs or ()))
    now = time.time()
    kernel = KernelView()  # each namespace's links, addresses and sockets read once per scrape

    def one(name: str) -> InstanceStatus:
        return status_mod.collect(fleet, paths, [name], procs, now, kernel=kernel)[0]

    if threads > 1 and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(names)),
                                thread_name_prefix="metrics") as pool:
            rows = list(pool.map(one, names))
    else:
        rows = [one(n) for n in names]
    return Snapshot(rows, procs is not None, inventory_ok, time.monotonic() - started, errors,
                    now)


# -- families ---------------------------------------------------------------------------------
class _Families:
    """Metric families by name, created on first use, yielded in creation order."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def _get(self, kind: type, stem: str, help_text: str, extra: tuple[str, ...]
             ) -> GaugeMetricFamily | CounterMetricFamily:
        name = f"{PREFIX}_{stem}"
        fam = self.by_name.get(name)
        if fam is None:
            fam = kind(name, help_text, labels=[*LABELS, *extra])
            self.by_name[name] = fam
        return fam

    def gauge(self, stem: str, help_text: str, labels: list[str], value: float,
              **extra: str) -> None:
        fam = self._get(GaugeMetricFamily, stem, help_text, tuple(extra))
        fam.add_metric([*labels, *extra.values()], float(value))

    def counter(self, stem: str, help_text: str, labels: list[str], value: float,
                **extra: str) -> None:
        fam = self._get(CounterMetricFamily, stem, help_text, tuple(extra))
        fam.add_metric([*labels, *extra.values()], float(value))

    def declare(self, kind: type, stem: str, help_text: str, *extra: str) -> None:
        """A family that is always exposed (with HELP and TYPE), even with no sample yet."""
        self._get(kind, stem, help_text, tuple(extra))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _labels(row: InstanceStatus) -> list[str]:
    return [row.name, row.role or "unknown", row.engine or "unknown"]


def _state_word(state: str) -> str:
    return state.replace(" ", "_")


def families(snap: Snapshot) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """Every family of one scrape (HELP texts are what docs/metrics.md explains at length)."""
    f = _Families()
    fleet = GaugeMetricFamily(f"{PREFIX}_supervisord_up",
                              "1 when the fleet's own supervisord answers on its socket")
    fleet.add_metric([], 1.0 if snap.supervisord_up else 0.0)
    inventory = GaugeMetricFamily(f"{PREFIX}_inventory_ok",
                                  "1 when the fleet folder loads without problems (0: the "
                                  "exporter uses the last good inventory or supervisord's list)")
    inventory.add_metric([], 1.0 if snap.inventory_ok else 0.0)
    # the families the alert rules and the dashboard rely on exist even in an empty fleet
    f.declare(GaugeMetricFamily, "up", "1 when supervisord reports the instance RUNNING")
    f.declare(GaugeMetricFamily, "qualified", "1 when a client holds a Teredo address "
              "(qualified with its server); clients only")
    f.declare(CounterMetricFamily, "drops", "Packets the engine dropped, by reason", "reason")
    for row in snap.rows:
        _instance(f, row)
    duration = GaugeMetricFamily(f"{PREFIX}_scrape_duration_seconds",
                                 "Time this scrape took to ask supervisord and every engine")
    duration.add_metric([], snap.duration)
    return [fleet, inventory, *f.by_name.values(), duration]


def _instance(f: _Families, row: InstanceStatus) -> None:
    lab = _labels(row)
    running = row.process_state == "RUNNING"
    f.gauge("up", "", lab, 1 if running else 0)
    current = _state_word(row.state)
    for word in (*PROCESS_STATES, *(() if current in PROCESS_STATES else (current,))):
        f.gauge("process_state", "Process state as `miredoctl status` shows it: supervisord's "
                "word, or FLAPPING, UNRESPONSIVE, DISABLED, NOT_ADDED, ORPHAN, ORPHANED; 1 for "
                "the current one", lab, 1 if word == current else 0, state=word)
    f.gauge("flapping", "1 when supervisord restarted the instance at least 3 times in the "
            "last 300 s", lab, 1 if row.flapping else 0)
    f.counter("restarts", "Automatic restarts by supervisord since an operator last started "
              "the instance (resets on up/restart)", lab, row.restarts)
    f.gauge("recent_restarts", "Automatic restarts by supervisord in the last 300 s", lab,
            row.recent_restarts)
    health = row.health or {}
    f.gauge("health_stopped", "1 while the health check holds the instance stopped (it "
            "flapped; `up` or `restart` starts it again)", lab, 1 if health.get("stopped") else 0)
    last = health.get("last")
    if isinstance(last, dict) and _num(last.get("time")) is not None:
        f.gauge("health_last_action_timestamp_seconds", "Unix time of the health check's last "
                "action on the instance, by action (restart, stop)", lab, last["time"],
                action=str(last.get("action")))
    f.gauge("ready", "1 when the instance runs, its engine answers as the process supervisord "
            "runs, and a client is qualified (what `miredoctl wait` waits for)", lab,
            1 if row.ready else 0)
    f.gauge("status_error", "1 when the tunnel view could not be read (status socket or "
            "kernel), see `miredoctl show`", lab, 1 if row.error else 0)
    if row.uptime is not None:
        f.gauge("uptime_seconds", "Seconds since supervisord started the running process",
                lab, row.uptime)
    if row.tunnel_state:
        f.gauge("tunnel_state", "The tunnel's state as the engine (or, for miredo, the "
                "kernel) reports it; 1 for the current one", lab, 1, state=row.tunnel_state)
    if row.role == "client" and running:
        qualified = row.tunnel_state == "qualified" and bool(row.address)
        f.gauge("qualified", "", lab, 1 if qualified else 0)
        f.gauge("address_present", "1 when the client's tunnel carries its Teredo address",
                lab, 1 if row.address else 0)
        if row.last_qualified is not None:
            f.gauge("last_qualified_timestamp_seconds", "Unix time of the client's last "
                    "successful qualification", lab, row.last_qualified)
    if row.mtu is not None and running:
        f.gauge("mtu_bytes", "MTU of the tunnel interface", lab, row.mtu)
    payload = row.engine_status
    if isinstance(payload, dict) and running:
        _engine(f, lab, payload)
    elif row.engine == "miredo" and running and row.rx_packets is not None:
        _kernel(f, lab, row)


def _engine(f: _Families, lab: list[str], p: dict[str, Any]) -> None:
    """teredo-engine's status answer (contract §4)."""
    worker = p.get("worker")
    if worker is not None:
        f.gauge("worker_running", "1 when the engine's worker answers its parent's heartbeat "
                "(status `worker` is \"running\")", lab, 1 if worker == "running" else 0)
    if _num(p.get("worker_restarts")) is not None:
        f.counter("worker_restarts", "Times the engine's privileged parent restarted its "
                  "worker (crash or watchdog) since the process started", lab,
                  p["worker_restarts"])
    peers = p.get("peers")
    if isinstance(peers, dict):
        if _num(peers.get("count")) is not None:
            f.gauge("peers", "Peers in the engine's peer table", lab, peers["count"])
        if _num(peers.get("trusted")) is not None:
            f.gauge("trusted_peers", "Peers whose mapping the engine has verified", lab,
                    peers["trusted"])
    memory = p.get("peer_memory")
    if isinstance(memory, dict):
        if _num(memory.get("bytes")) is not None:
            f.gauge("peer_memory_bytes", "Memory the peer table accounts for", lab,
                    memory["bytes"])
        if _num(memory.get("limit")) is not None:
            f.gauge("peer_memory_limit_bytes", "The peer table's memory budget", lab,
                    memory["limit"])
    counters = p.get("counters")
    if isinstance(counters, dict):
        for key, (stem, direction) in ENGINE_COUNTERS.items():
            value = _num(counters.get(key))
            if value is None or (stem.startswith("raw6") and p.get("role") != "server"):
                continue
            f.counter(stem, COUNTER_HELP[stem], lab, value, direction=direction)
        drops = counters.get("drops")
        if isinstance(drops, dict):
            for reason, count in sorted(drops.items()):
                if _num(count) is not None:
                    f.counter("drops", "", lab, count, reason=str(reason))
    if _num(p.get("icmp_errors_sent")) is not None:
        f.counter("icmp_errors_sent", "ICMPv6 errors the engine sent", lab,
                  p["icmp_errors_sent"])
    handled = p.get("handled")
    if isinstance(handled, dict):
        for kind, count in sorted(handled.items()):
            if _num(count) is not None:
                f.counter("server_handled", "Messages a server handled, by kind "
                          "(ra_sent, forwarded_native, forwarded_teredo)", lab, count,
                          kind=str(kind))
    ratelimit = p.get("ratelimit")
    if isinstance(ratelimit, dict):
        _ratelimit(f, lab, ratelimit)
    sock = p.get("status_socket")
    if isinstance(sock, dict):
        for key in ("timeouts", "evicted"):
            if _num(sock.get(key)) is not None:
                f.counter(f"status_socket_{key}", f"Status-socket clients the engine "
                          f"disconnected ({key}) since its worker started", lab, sock[key])
    collector = p.get("gc")
    if isinstance(collector, dict) and isinstance(collector.get("collections"), list):
        for generation, count in enumerate(collector["collections"]):
            if _num(count) is not None:
                f.counter("gc_collections", "Cyclic garbage collections in the engine's "
                          "worker since it started, by generation (2: the full ones, which "
                          "pause the packet path)", lab, count, generation=str(generation))


def _ratelimit(f: _Families, lab: list[str], rl: dict[str, Any]) -> None:
    """The server's limiters: per-key buckets (`X_per_source` objects) and global ones
    (`X_total_denied` numbers). A packet is denied by one limiter only (the checks stop at the
    first refusal), so the `limiter` label values add up."""
    denied_help = "Packets a server's rate limiter refused, by limiter"
    for key, value in sorted(rl.items()):
        if isinstance(value, dict):
            if _num(value.get("denied")) is not None:
                f.counter("ratelimit_denied", denied_help, lab, value["denied"], limiter=key)
            if _num(value.get("evictions")) is not None:
                f.counter("ratelimit_evictions", "Buckets a full per-key limiter dropped "
                          "before they had refilled", lab, value["evictions"], limiter=key)
            if _num(value.get("keys")) is not None:
                f.gauge("ratelimit_keys", "Keys (sources or destinations) a per-key limiter "
                        "tracks", lab, value["keys"], limiter=key)
            if _num(value.get("max_keys")) is not None:
                f.gauge("ratelimit_max_keys", "Keys a per-key limiter may track", lab,
                        value["max_keys"], limiter=key)
        elif key.endswith("_denied") and _num(value) is not None:
            f.counter("ratelimit_denied", denied_help, lab, value,
                      limiter=key.removesuffix("_denied"))


def _kernel(f: _Families, lab: list[str], row: InstanceStatus) -> None:
    """Debian's miredo: its tunnel interface's counters as the kernel keeps them. The kernel
    transmits (tx) onto the TUN device what the daemon reads, and receives (rx) what it writes,
    so tx is our `in` and rx our `out`."""
    for stem, value, direction in (
            ("tun_packets", row.tx_packets, "in"), ("tun_bytes", row.tx_bytes, "in"),
            ("tun_packets", row.rx_packets, "out"), ("tun_bytes", row.rx_bytes, "out")):
        if value is not None:
            f.counter(stem, COUNTER_HELP[stem], lab, value, direction=direction)


# -- the collector ----------------------------------------------------------------------------
class FleetCollector(Collector):
    """Gathers the fleet on every `collect()` (every scrape); keeps only the last good inventory.

    The inventory is re-read when a file in the fleet folder changed (name, size or mtime), so
    instances added by `up` appear without restarting the exporter, and an unchanged inventory
    costs no YAML parsing (a third of a 50-instance scrape otherwise); while the folder has a
    problem (an edit in progress), the last inventory that loaded is used and
    `teredo_inventory_ok` is 0.
    """

    def __init__(self, fleet_dir: Path, paths: StatePaths, *,
                 threads: int = GATHER_THREADS,
                 warn: Callable[[str], None] | None = None) -> None:
        self.fleet_dir = Path(fleet_dir)
        self.paths = paths
        self.threads = threads
        self.warn = warn or (lambda msg: print(f"miredoctl: {msg}", file=sys.stderr))
        self._last_fleet: Fleet | None = None
        self._last_problem: str | None = None
        self._signature: tuple[Any, ...] | None = None
        self.last: Snapshot | None = None

    def _files_signature(self) -> tuple[Any, ...] | None:
        try:
            entries = sorted(os.scandir(self.fleet_dir), key=lambda e: e.name)
            return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries
                         if e.name.endswith((".yaml", ".yml")) or e.name == "templates")
        except OSError:
            return None

    def _fleet(self) -> tuple[Fleet, bool]:
        signature = self._files_signature()
        if signature is not None and signature == self._signature and self._last_fleet:
            return self._last_fleet, True
        try:
            fleet = load_fleet(self.fleet_dir)
        except InventoryError as exc:
            problem = f"the inventory has {len(exc.problems)} problem(s) (see `miredoctl " \
                      f"validate`); metrics use the last good inventory or supervisord's list"
            if problem != self._last_problem:
                self.warn(f"warning: {problem}")
            self._last_problem = problem
            return self._last_fleet or Fleet(self.fleet_dir, {}, None), False
        self._last_problem = None
        self._last_fleet, self._signature = fleet, signature
        return fleet, True

    def describe(self) -> Iterable[Any]:
        """Nothing up front: registering must not scrape the fleet."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        started = time.monotonic()
        fleet, ok = self._fleet()
        snap = gather(fleet, self.paths, inventory_ok=ok, threads=self.threads)
        snap.duration = time.monotonic() - started
        self.last = snap
        yield from families(snap)


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry with our collector only: no process or Python GC metrics of the exporter."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(collector: Collector) -> bytes:
    """The Prometheus text format (0.0.4) of one scrape."""
    return generate_latest(registry_for(collector))


def write_textfile(directory: Path, data: bytes) -> Path:
    """Write `directory/miredoctl.prom` for node_exporter's textfile collector, atomically.

    The collector may read at any moment: the text goes to a hidden temp file in the same folder
    (not named *.prom, so never read), is fsynced, and renamed over the old file, so a reader
    sees the old file or the new one, never a part.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MiredoctlError(f"--textfile: {directory} is not a directory")
    path = directory / TEXTFILE_NAME
    try:
        write_atomic(path, data.decode(), mode=0o644)
    except OSError as exc:
        raise MiredoctlError(f"--textfile: cannot write {path}: {exc.strerror or exc}")
    return path
