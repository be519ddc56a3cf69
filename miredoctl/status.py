"""What each instance is doing: supervisord's process view merged with the tunnel's own view.

Sources, per engine (contract §4): teredo-engine answers `status\\n` on its status socket with one
JSON object. Debian's miredo has no such socket, so for it we read what the kernel shows inside
the instance's namespace: the tunnel interface's addresses and counters (`ip -j`), and the UDP
sockets its processes hold (`ss`). A Teredo address also encodes the server and the mapped public
address, so those are decoded from it.
"""

from __future__ import annotations

import pwd
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from miredoctl import gitinfo
from miredoctl.inventory import Fleet, Instance
from miredoctl.kernelview import KernelView
from miredoctl.listeners import healthrules as health_check
from miredoctl.listeners import history
from miredoctl.listeners.engineprobe import SOCKET_TIMEOUT, decode_teredo, query_engine
from miredoctl.listeners.timedlog import LogLine, display_time
from miredoctl.procs import alive, read_pid
from miredoctl.state import FleetProcess, StatePaths, fleet_processes
from miredoctl.supervisord import ACTIVE_STATES, RUNNING_NAME, STOPPED_NAME, state_of

# A RUNNING engine whose status socket does not answer within SOCKET_TIMEOUT, or whose parent
# answers for a worker that does not (contract §4: `worker` other than "running"): the process
# exists, so supervisord says RUNNING, but it forwards nothing. `status` exits 3 for it.
UNRESPONSIVE = "UNRESPONSIVE"
# An engine of this fleet that runs while no supervisord holds it (its supervisord was killed
# or died): it forwards, but nobody restarts it, its output goes nowhere, and `down` through
# supervisord alone would miss it. Found by its pid file and command line (state.py).
ORPHANED = "ORPHANED"


@dataclass
class InstanceStatus:
    """One row of `miredoctl status` (and one object of its JSON)."""

    name: str
    role: str | None
    engine: str | None
    netns: str | None
    enabled: bool
    # supervisord's process state, or DISABLED / NOT ADDED / ORPHAN, or FLAPPING (a RUNNING,
    # STARTING or BACKOFF process that supervisord restarted too often lately, see
    # listeners/history.py), or UNRESPONSIVE (RUNNING, but the engine does not answer), or
    # ORPHANED (the engine runs, but no supervisord holds it)
    state: str
    pid: int | None = None
    process_state: str | None = None  # supervisord's own word, also when `state` is FLAPPING
    engine_pid: int | None = None  # the pid the engine itself reports (status socket/pid file)
    uptime: float | None = None
    tunnel_state: str | None = None
    interface: str | None = None
    mtu: int | None = None
    address: str | None = None
    server: str | None = None
    mapped: str | None = None
    bound: list[str] = field(default_factory=list)
    peers: int | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    rx_packets: int | None = None
    tx_packets: int | None = None
    last_qualified: float | None = None
    restarts: int = 0  # automatic restarts by supervisord since the last operator start
    recent_restarts: int = 0  # of those, within history.FLAP_WINDOW
    flapping: bool = False
    worker_restarts: int | None = None  # engine-internal worker restarts (teredo-engine only)
    last_change: float | None = None  # last process state change (Unix time)
    last_exit: float | None = None  # last time the process exited (Unix time)
    last_error: str | None = None
    source: str | None = None  # where the tunnel view came from
    error: str | None = None
    config: str | None = None
    log: str | None = None
    # the engine's whole answer (contract §4) when it is the process supervisord runs: what
    # the columns above leave out (drops by reason, rate limits, worker), for `metrics`
    engine_status: dict[str, Any] | None = None
    # what the health check did to it (listeners/healthrules.py), None if nothing
    health: dict[str, Any] | None = None
    # the fleet and template commits its config was applied from, and whether their trees
    # had uncommitted edits (gitinfo.load_applied: the state folder's record, no git call)
    revision: dict[str, Any] | None = None

    @property
    def up(self) -> bool:
        return self.state == RUNNING_NAME

    @property
    def ready(self) -> bool:
        """Running, answering as the process supervisord runs, and a client also qualified.

        The pid check is what makes `wait` trustworthy right after an engine died: until
        supervisord notices, it still says RUNNING with the old pid, and the dead engine's
        TUN interface may still carry its Teredo address. Only an engine that answers (status
        socket; pid file for Debian's miredo) with supervisord's pid is the one running now.
        """
        if not self.up or self.pid is None or self.engine_pid != self.pid:
            return False
        return self.role != "client" or (self.tunnel_state == "qualified" and bool(self.address))

    def note_error(self, message: str) -> None:
        """Keep every problem seen while collecting (socket, then kernel view), not the last."""
        self.error = f"{self.error}; {message}" if self.error else message

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def process_tree(pid: int) -> str:
    """`pid name (user), ...` for the engine and what it forked: miredo's root parent, its
    unprivileged worker and the privileged helper look alike in `ps`; this names them."""
    parts = []
    for p in sorted(KernelView().descendants(pid)):
        try:
            comm = Path(f"/proc/{p}/comm").read_text().strip()
            uid = Path(f"/proc/{p}").stat().st_uid
        except OSError:
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        parts.append(f"{p} {comm} ({user})")
    return ", ".join(parts)


def interface_view(inst: Instance, st: InstanceStatus, kernel: KernelView | None = None) -> None:
    """Fill address/MTU/counters from the kernel (for engines without a status socket)."""
    ifname = inst.get("interface")
    if inst.role == "server" or not ifname:
        return
    st.interface = ifname
    kernel = kernel or KernelView()
    try:
        link = kernel.link(inst.netns, ifname)
        addrs = kernel.ipv6_addresses(inst.netns, ifname)
    except OSError as exc:
        st.note_error(f"interface {ifname}: {exc}")
        return
    if link:
        st.mtu = link.get("mtu")
        stats = link.get("stats64") or link.get("stats") or {}
        st.rx_bytes = stats.get("rx", {}).get("bytes")
        st.tx_bytes = stats.get("tx", {}).get("bytes")
        st.rx_packets = stats.get("rx", {}).get("packets")
        st.tx_packets = stats.get("tx", {}).get("packets")
        st.tunnel_state = "up" if "UP" in link.get("flags", []) else "down"
    for info in addrs:
        local = info.get("local", "")
        decoded = decode_teredo(local)
        if decoded and inst.role == "client":
            st.address = local
            st.server, ip, port = decoded
            st.mapped = f"{ip}:{port}"
            st.tunnel_state = "qualified"
    if inst.role == "client" and st.address is None and st.tunnel_state:
        st.tunnel_state = "not qualified"


def engine_view(payload: dict[str, Any], st: InstanceStatus) -> None:
    """Fill the row from teredo-engine's status JSON (contract §4)."""
    pid = payload.get("pid")
    st.engine_pid = pid if isinstance(pid, int) else None
    st.tunnel_state = payload.get("state")
    st.interface = payload.get("interface") or st.interface
    st.mtu = payload.get("mtu")
    st.address = payload.get("address")
    st.server = payload.get("server")
    mapped = payload.get("mapped") or None
    if isinstance(mapped, dict) and mapped.get("ip"):
        st.mapped = f"{mapped['ip']}:{mapped.get('port')}"
    st.bound = list(payload.get("bound") or [])
    peers = payload.get("peers")
    if isinstance(peers, dict):
        st.peers = peers.get("count")
    counters = payload.get("counters") or {}
    st.rx_bytes = counters.get("udp_in_bytes")
    st.tx_bytes = counters.get("udp_out_bytes")
    st.rx_packets = counters.get("udp_in_packets")
    st.tx_packets = counters.get("udp_out_packets")
    # contract §4: Unix wall-clock seconds; anything before the process start is not one
    qualified, started = payload.get("last_qualified"), payload.get("started")
    if isinstance(qualified, int | float) and (not started or qualified >= started - 1):
        st.last_qualified = float(qualified)
    st.worker_restarts = payload.get("worker_restarts")
    st.last_error = payload.get("last_error")
    st.engine_status = payload


def unsupervised_engines(paths: StatePaths, procs: dict[str, dict[str, Any]] | None
                         ) -> dict[str, FleetProcess]:
    """This fleet's engines that run but that supervisord does not hold (`procs` None: it is
    not running at all), by instance name."""
    live = {int(i["pid"]) for i in (procs or {}).values() if i.get("pid")}
    return {name: proc for name, proc in fleet_processes(paths).items()
            if not name.startswith("_") and not ({proc.pid, proc.pgid} & live)}


def collect(fleet: Fleet, paths: StatePaths, names: list[str],
            procs: dict[str, dict[str, Any]] | None, now: float | None = None,
            strays: dict[str, FleetProcess] | None = None,
            kernel: KernelView | None = None) -> list[InstanceStatus]:
    """Rows for the selected names; `procs` None means supervisord is not running.

    `strays` (default: looked up in /proc when some instance is not held by supervisord) are
    the engines running without supervisord; they show as ORPHANED with their own pid.
    `kernel` is read at most once per namespace for all rows (shared by a scrape's threads).
    """
    rows = []
    kernel = kernel or KernelView()
    now = time.time() if now is None else now
    applied = gitinfo.load_applied(paths)  # one small file for all rows, no git call
    for name in names:
        inst = fleet.instances.get(name)
        info = (procs or {}).get(name)
        if inst is None:
            st = InstanceStatus(name, None, None, None, False, "ORPHAN")
        else:
            st = InstanceStatus(name, inst.role, inst.engine, inst.netns, inst.enabled,
                                STOPPED_NAME, interface=inst.get("interface"))
            if not inst.enabled:
                st.state = "DISABLED"
            elif procs is not None and info is None:
                st.state = "NOT ADDED"
        st.config = str(paths.config(name)) if paths.config(name).exists() else None
        st.revision = applied.get(name) if st.config else None
        st.log = str(paths.log(name)) if paths.log(name).exists() else None
        if info is not None:
            st.state = st.process_state = info["statename"]
            if info.get("pid"):
                st.pid = info["pid"]
                st.uptime = max(0.0, float(info.get("now", now)) - float(info["start"]))
            if info.get("spawnerr"):
                st.error = info["spawnerr"]
        if state_of(info) not in ACTIVE_STATES:
            if strays is None:
                strays = unsupervised_engines(paths, procs)
            stray = strays.get(name)
            if stray is not None:
                st.state, st.pid = ORPHANED, stray.pid
                st.uptime = None if stray.started is None else max(0.0, now - stray.started)
                st.note_error(f"pid {stray.pid} runs without supervisord: nobody restarts it "
                              "and its output is lost; `miredoctl up` restarts it under "
                              "supervisord, `miredoctl down` stops it")
        summary = history.summarize(history.load(paths.history(name)), now)
        st.restarts, st.recent_restarts = summary.restarts, summary.recent_restarts
        st.flapping = summary.flapping
        st.last_change, st.last_exit = summary.last_change, summary.last_exit
        if st.flapping and state_of(info) in ACTIVE_STATES:
            st.state = "FLAPPING"
        st.health = health_check.status_view(paths.histories, name,
                                             state_of(info) in ACTIVE_STATES, now)
        if inst is not None and st.pid:
            _fill_tunnel(inst, paths, st, kernel)
        rows.append(st)
    return rows


def _fill_tunnel(inst: Instance, paths: StatePaths, st: InstanceStatus,
                 kernel: KernelView) -> None:
    if inst.engine == "teredo-engine":
        sock = paths.status_socket(inst.name)
        try:
            payload = query_engine(sock)
            pid = payload.get("pid")
            st.engine_pid = pid if isinstance(pid, int) else None
            if st.engine_pid == st.pid:
                engine_view(payload, st)
                st.source = f"status socket {sock}"
                worker = payload.get("worker")
                if worker is not None and worker != "running":
                    _unresponsive(st, f"the engine's worker (pid {payload.get('worker_pid')}) is "
                                      f"{worker}: silent for {payload.get('worker_silent')} s",
                                  f"worker {worker}")
                return
            # someone else's engine (a leftover) answers on our socket: show none of its data
            st.note_error(f"status socket {sock} is answered by pid {pid}, but supervisord "
                          f"runs pid {st.pid}")
            return
        except TimeoutError:
            # a frozen engine: the kernel still shows its address, which would look qualified
            _unresponsive(st, f"status socket {sock} did not answer within "
                              f"{SOCKET_TIMEOUT:g} s", "unresponsive")
            return
        except (OSError, ValueError) as exc:
            st.note_error(f"status socket {sock}: {exc}")
    else:
        st.engine_pid = _pidfile_pid(paths.pidfile(inst.name))
    interface_view(inst, st, kernel)
    st.source = st.source or "kernel (ip/ss in the instance's namespace)"
    if not st.bound and st.pid:
        try:
            st.bound = kernel.bound_udp(inst.netns, st.pid)
        except OSError:
            pass


def _unresponsive(st: InstanceStatus, why: str, tunnel: str) -> None:
    """Mark a RUNNING engine that does not answer; FLAPPING (also exit 3) keeps precedence."""
    if st.state == RUNNING_NAME:
        st.state = UNRESPONSIVE
    st.tunnel_state = tunnel
    st.note_error(why)


def _pidfile_pid(path: Path) -> int | None:
    """The pid Debian's miredo wrote (its root parent, which supervisord runs), if alive."""
    pid = read_pid(path)
    return pid if pid is not None and alive(pid) else None


# -- formatting ------------------------------------------------------------------------------
def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def table(rows: list[InstanceStatus]) -> str:
    head = ("NAME", "ROLE", "ENGINE", "STATE", "PID", "UPTIME", "RESTARTS", "TUNNEL",
            "ADDRESS / BOUND", "MAPPED", "PEERS", "RX/TX", "COMMIT")
    lines = [head]
    for st in rows:
        where = st.address or (", ".join(st.bound) if st.bound else "-")
        lines.append((
            st.name, st.role or "-", st.engine or "-", st.state, str(st.pid or "-"),
            human_duration(st.uptime), restarts_text(st), st.tunnel_state or "-", where,
            st.mapped or "-",
            "-" if st.peers is None else str(st.peers),
            f"{human_bytes(st.rx_bytes)}/{human_bytes(st.tx_bytes)}"
            if st.rx_bytes is not None else "-",
            gitinfo.short(st.revision),
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    notes = [n for st in rows if (n := health_check.status_note(st.name, st.health))]
    return "\n".join([*("  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True))
                        .rstrip() for row in lines), *notes])


def restarts_text(st: InstanceStatus) -> str:
    """Process restarts by supervisord, plus `+Nw` for the engine's own worker restarts."""
    text = str(st.restarts)
    return text + (f"+{st.worker_restarts}w" if st.worker_restarts else "")


def ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{human_duration(max(0.0, time.time() - ts))} ago"


def detail(st: InstanceStatus, inst: Instance | None, log: list[LogLine] | None = None) -> str:
    """A `wg show`-style block for one instance, ending with its last log lines if given."""
    out = [f"instance: {st.name}"]

    def kv(key: str, value: Any) -> None:
        if value not in (None, "", []):
            out.append(f"  {key}: {value}")

    kv("role", st.role)
    kv("engine", st.engine)
    kv("netns", st.netns or "(host)")
    proc = st.state + (f" ({st.process_state})" if st.process_state not in (None, st.state)
                       else "")
    proc += f", pid {st.pid}, up {human_duration(st.uptime)}" if st.pid else ""
    kv("process", proc)
    if st.pid:
        kv("process tree", process_tree(st.pid))
    restarts = f"{st.restarts} since the last start by an operator"
    if st.recent_restarts:
        restarts += f", {st.recent_restarts} in the last {int(history.FLAP_WINDOW)} s"
    if st.flapping:
        restarts += " (FLAPPING)"
    kv("restarts", restarts)
    if st.last_exit:
        kv("last exit", ago(st.last_exit))
    if st.last_change:
        kv("last state change", ago(st.last_change))
    kv("config", st.config)
    kv("applied from", gitinfo.describe(st.revision))
    if inst is not None:
        kv("inventory", ", ".join(str(p) for p in inst.sources))
    kv("tunnel", st.tunnel_state)
    kv("interface", st.interface and f"{st.interface}" + (f", mtu {st.mtu}" if st.mtu else ""))
    kv("teredo address", st.address)
    kv("server", st.server)
    kv("mapped address", st.mapped)
    kv("bound", ", ".join(st.bound))
    kv("peers", st.peers)
    if st.rx_bytes is not None:
        kv("transfer", f"{human_bytes(st.rx_bytes)} received ({st.rx_packets} packets), "
                       f"{human_bytes(st.tx_bytes)} sent ({st.tx_packets} packets)")
    if st.last_qualified:
        kv("last qualified", ago(st.last_qualified))
    kv("engine worker restarts", st.worker_restarts)
    if st.health and st.health.get("stopped"):
        kv("health check", f"stopped by health check: {st.health['stopped']} (until `up` or "
                           "`restart`)")
    elif st.health and st.health.get("last"):
        kv("health check", f"{st.health['last']['text']}, {ago(st.health['last']['time'])}")
    kv("last error", st.last_error)
    kv("source", st.source)
    kv("log", st.log)
    kv("problem", st.error)
    if log:
        out.append("  recent log:")
        out.extend(f"    {display_time(ln.time)} {ln.text}" if ln.time is not None
                   else f"    {ln.text}" for ln in log)
    return "\n".join(out)
