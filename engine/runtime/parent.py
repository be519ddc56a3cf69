"""The privileged parent: pid file, TUN, sockets, interface changes, signals, respawn.

It stays small on purpose: it is the one process that keeps root.  It opens what needs root
(`sockets`, `interface`), forks a worker per *generation* (a set of sockets for one config;
the child runs `worker.run_worker`), and afterwards only (a) applies validated interface
requests from the worker to its own interface index, (b) watches the host over rtnetlink
(`hostwatch`: a client re-qualifies at once, a relay gets its ICMPv6 error sources as host
facts), (c) turns signals into a clean exit, a reload or a respawn, (d) watches that the worker's
loop still turns (`heartbeat`: a ping a second on the control socket) and restarts a worker
that stopped answering after `WorkerWatchdog` seconds.

A worker that does not answer its heartbeat cannot serve the status socket either, so from the
moment it is reported unresponsive until a worker answers again, the parent answers the
status socket itself (a stand-in `StatusServer` on the same inherited listener) with the
static fields it knows and ``"worker": "unresponsive"`` (docs/contracts.md §4): a manager sees
the fault instead of a timeout.  The stand-in parses one short line from a root-owned 0660
socket, the same bounded code the worker runs.

rtnetlink work goes through `rtnl_min` (`netlink` for a client, `relay_link` for a relay),
whose messages are built on pyroute2's message classes (a relay loads them before its fork,
a client's parent right after it); never pyroute2's `IPRoute`, whose import took 0.1-0.3 s
and, after the fork, made a client's parent about 14 MiB private (docs/performance.md).  A
client's parent forks its worker and serves the worker's first "up"
(`rtnl_min.configure_fresh`) before it subscribes to the host's changes and lists the
local-discovery interfaces (or `NETLINK_DEFER` seconds after the fork without an "up"):
nothing between launch and address waits for those dumps.

It holds the TUN descriptor and the status socket across generations: a SIGHUP that only
needs new sockets restarts the worker while the interface and the socket path stay.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

import engine
from engine.config import ConfigError, load_config
from engine.config.values import prefix_text
from engine.runtime import capabilities, channel, heartbeat, rtnl_min
from engine.runtime.discovery_select import list_discovery_interfaces, qualifying
from engine.runtime.hostwatch import HostWatch
from engine.runtime.interface import Interface
from engine.runtime.logsetup import get_logger, set_facility
from engine.runtime.loop import Loop, Timer
from engine.runtime.pidfile import PidFile
from engine.runtime.privsep import Account, PrivsepError, cap_eff, status_field
from engine.runtime.signals import SignalPipe, ignore_user_signals
from engine.runtime.signals import name as signame
from engine.runtime.sockets import (
    BindError,
    Generation,
    open_discovery_or_warn,
    open_generation,
    server_addresses,
)
from engine.runtime.status_server import (
    StatusServer,
    StatusSocketError,
    create_listener,
    remove_socket,
)
from engine.runtime.tun import TunError
from engine.runtime.worker import WorkerResources, needs_new_worker, run_worker

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any

    from engine.config import EngineConfig
    from engine.options import RunOptions

log = get_logger()

RESPAWN_DELAY = 1.0
MAX_RESPAWN_DELAY = 30.0
STOP_TIMEOUT = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
ROLE_MODULES = {"client": "engine.proto.client", "relay": "engine.proto.relay",
                "server": "engine.proto.server"}
NETLINK_DEFER = 0.5
"""A client's parent starts its host watch after its worker's first "up", or after this many
seconds without one (a slow or absent server must not leave the host unwatched for long)."""


class StartupError(Exception):
    """Set-up failed; ``str()`` is the one line the user sees (exit code 1)."""


def netlink_loaded() -> bool:
    """Whether `engine.runtime.netlink` is loaded: for a client, once `_netlink_after_fork`
    ran (a relay's set-up loads it too, for its flush; only a client lists discovery
    interfaces)."""
    return "engine.runtime.netlink" in sys.modules


def wait_exit(pid: int, timeout: float) -> bool:
    """Reap the child `pid` if it exits within `timeout` seconds; False if it still runs.

    A pidfd becomes readable when the process exits, so the parent sleeps in `poll` instead
    of polling `waitpid`, and wakes the moment the worker is gone.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already reaped
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
    finally:
        os.close(fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


class Parent:
    """One engine instance's privileged parent."""

    def __init__(self, config: EngineConfig, opts: RunOptions, account: Account) -> None:
        self.config = config
        self.opts = opts
        self.account = account
        self.loop = Loop()
        self.pidfile: PidFile | None = PidFile(opts.pidfile) if opts.pidfile else None
        self.status_path: str | None = opts.status_socket
        self.status_listener: socket.socket | None = None
        self.interface = Interface()
        self.host = HostWatch(self.loop, self._on_host_change, self._on_icmp_sources)
        self.signals: SignalPipe | None = None
        self.worker_pid: int | None = None
        self.worker_ready = False
        self.control: socket.socket | None = None
        self.control_buf = channel.LineBuffer()
        self.respawn_timer: Timer | None = None
        self.respawn_delay = RESPAWN_DELAY
        self.exit_code: int | None = None
        self.started = time.time()
        self.on_ready: Callable[[int], None] | None = None
        """Daemon mode: called once with 0 when the first worker is verified unprivileged."""
        self.restarts = 0
        self.heartbeat = heartbeat.Heartbeat(config.worker_watchdog)
        self.heartbeat_timer: Timer | None = None
        self.stand_in: StatusServer | None = None
        """The parent's own answers on the status socket while the worker cannot give them."""
        self.worker_info: dict[str, Any] = {}
        """The static status fields the current worker generation was given."""
        self.discovery_open = False
        """Whether the current worker holds a discovery socket (UDP 3544)."""
        self.discovery_idle_logged = False
        self.netlink_timer: Timer | None = None
        """A client's deferred host-watch set-up (`NETLINK_DEFER`), pending."""

    # -- set-up -------------------------------------------------------------------------

    def start(self) -> None:
        """Everything that needs root, in miredo's order; raises `StartupError`."""
        if self.config.role != "client":
            # The collector is off since launch (`engine.launch`) for a client's start, which
            # is timed to its address.  A relay's set-up decodes the namespace's routes with
            # pyroute2, whose message objects form cycles: without collections they pile up
            # (13,400 objects, 2.3 MiB with 100 relays in the namespace) and the heap keeps
            # their pages after they are freed (docs/performance.md, "The night pass").
            gc.enable()
        ignore_user_signals()
        self.signals = SignalPipe((*STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD))
        self.loop.add_reader(self.signals.fileno(), self._on_signals)
        try:
            if self.pidfile is not None:
                self.pidfile.acquire()
                self.pidfile.write(os.getpid())
            if self.status_path:
                self.status_listener = create_listener(self.status_path)
            self.interface.open(self.config)
            if self.config.role != "client":  # a client's: after the fork
                self._follow_host(self.config)
            gen = open_generation(
                self.config, list_discovery_interfaces if netlink_loaded() else None
            )
        except (OSError, BindError, TunError, StatusSocketError) as e:
            raise StartupError(str(e))
        except Exception as e:  # pid file and the rest carry their own one-line messages
            raise StartupError(str(e))
        log.info(
            "starting %s (%s) %s, pid %d",
            self.config.role,
            self.config.relay_type,
            engine.__version__,
            os.getpid(),
        )
        # the role's module before the fork: the worker starts at once, and shares its pages
        importlib.import_module(ROLE_MODULES[self.config.role])
        # pyroute2's rtnetlink message classes: a relay's set-up above loaded them before the
        # fork; a client's parent loads them right after it, while its worker sends the first
        # RS (measured faster to the address and 0.4 MiB less PSS than before the fork:
        # docs/performance.md, "Keeping pyroute2, leanly"); a server never needs them
        self._fork_worker(gen)
        if self.config.role == "client":
            rtnl_min.load()
            self.netlink_timer = self.loop.call_later(
                NETLINK_DEFER, lambda: self._netlink_after_fork(gen))
        self._keep_needed_capabilities()
        self.heartbeat_timer = self.loop.call_later(heartbeat.INTERVAL, self._tick)

    def _keep_needed_capabilities(self) -> None:
        """Start-up is over: from here on the parent only re-creates workers and configures
        the tunnel, so everything else root could do goes, bounding set included."""
        try:
            kept = capabilities.keep_only(capabilities.PARENT_CAPABILITIES)
        except OSError as e:
            raise StartupError(f"cannot drop capabilities: {e}")
        log.debug("parent keeps %s", ", ".join(capabilities.names_of(kept)) or "nothing")

    def _netlink_after_fork(self, gen: Generation) -> None:
        """A client's rtnetlink set-up: the host watch and the local-discovery listing; run
        once the worker's first "up" was served (`_apply`), or `NETLINK_DEFER` seconds after
        the fork without one."""
        if self.netlink_timer is not None:
            self.netlink_timer.cancel()
            self.netlink_timer = None
        try:
            importlib.import_module("engine.runtime.netlink")
        except ImportError as e:  # fatal, as it was when this ran inside start()
            log.error("cannot load the rtnetlink module: %s", e)
            self.exit_code = 1
            self.loop.stop()
            return
        # the worker may have qualified during the import: its "up" is what launch-to-address
        # waits for, so it goes before the subscriptions and the discovery listing
        self._on_control()
        self._follow_host(self.config)
        if gen.discovery_pending:
            self._send_discovery()

    def _follow_host(self, config: EngineConfig) -> None:
        tun = self.interface.tun
        self.host.follow(config.role, tun.index if tun else None)

    # -- worker generations -------------------------------------------------------------

    def _new_generation(self, config: EngineConfig) -> bool:
        """Open sockets (and interface changes) for `config` and fork; False on failure."""
        old = self.config
        if self.netlink_timer is not None:  # this generation's set-up below does its work
            self.netlink_timer.cancel()
            self.netlink_timer = None
        try:
            if self.interface.tun is not None and (
                config.role == "server"
                or config.role != old.role
                or config.interface_name != old.interface_name
            ):
                self.interface.close()
            self.interface.open(config)
            self._follow_host(config)
            gen = open_generation(config, list_discovery_interfaces)
        except (OSError, BindError, TunError) as e:
            log.error("%s", e)
            return False
        self.config = config
        self._fork_worker(gen)
        return True

    def _status_info(self, gen: Generation) -> dict[str, Any]:
        """The worker's static status fields: what only the parent knows (docs §4)."""
        c = self.config
        tun = self.interface.tun
        if c.role == "server":
            server, server2 = server_addresses(c)
        else:
            server, server2 = c.server_address, c.server_address2
        return {
            "version": engine.__version__,
            "pid": os.getpid(),
            "role": c.role,
            "relay_type": c.relay_type,
            "config": c.path,
            "started": self.started,
            "interface": tun.name if tun else None,
            "ifindex": tun.index if tun else None,
            "mtu": c.interface_mtu if c.role == "relay" else None,
            "prefix": prefix_text(c.prefix) + "/32" if c.role != "client" else None,
            "server": server,
            "server2": server2,
            "bound": gen.bound,
            "user": self.account.name,
            "worker_restarts": self.restarts,
        }

    def _fork_worker(self, gen: Generation) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        tun = self.interface.tun
        res = WorkerResources(
            udp=gen.udp,
            control=child_end,
            status_listener=self.status_listener,
            tun_fd=tun.fd if tun else None,
            raw6=gen.raw6,
            info=self._status_info(gen),
            discovery=gen.discovery,
        )
        self.worker_info = res.info
        self.discovery_open = len(gen.udp) > 2 and gen.udp[2] is not None
        self.discovery_idle_logged = False
        # Share the heap with the worker: after the fork, a collection in either process would
        # write the GC header of every inherited object and so copy nearly every page of it.
        # Frozen objects are never scanned again, in the parent or in the worker, so garbage
        # frozen with them stays for good: collect first.  Only a client's first fork skips
        # it: its collector has been off since launch (`engine.launch`), its set-up leaves
        # about 140 garbage objects of 13,000, and the collection would cost 3-5 ms before
        # its first Router Solicitation.
        if gc.isenabled():
            gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                parent_end.close()
                self._close_in_child()
                code = run_worker(self.config, res, self.account, self.opts.chrootdir)
            except BaseException as e:
                with contextlib.suppress(Exception):
                    log.error("worker failed: %s", e)
            finally:
                os._exit(code)
        gc.enable()  # a client's is off since launch (`engine.launch`); the worker: `run`
        child_end.close()
        gen.close()  # the worker owns the sockets now
        parent_end.setblocking(False)
        self.control = parent_end
        self.control_buf = channel.LineBuffer()
        self.worker_pid = pid
        self.worker_ready = False
        self.loop.add_reader(parent_end.fileno(), self._on_control)
        sources = self.host.icmp_sources()
        if sources is not None:
            self._send_fact(channel.icmp_sources_message(sources))

    def _close_in_child(self) -> None:
        """In the forked worker: let go of what belongs to the parent alone."""
        if self.signals is not None:
            self.signals.close()
        if self.pidfile is not None:
            self.pidfile.close_in_child()
        self.host.close_in_child()  # the parent keeps watching with its own descriptors
        if self.control is not None:
            self.control.close()
        if self.stand_in is not None:
            self.stand_in.close_in_child()
        self.loop.close()

    def _send_fact(self, line: bytes) -> None:
        if self.control is None:
            return
        try:
            self.control.sendall(line)
        except OSError as e:  # the worker is gone or stuck; its successor gets them anew
            log.warning("cannot send host facts to the worker: %s", e)

    def _send_discovery(self) -> None:
        """Fresh discovery interfaces for the worker, and UDP 3544 opened or closed to match:
        a client listens there only while an interface qualifies (issue 9 flaw 4)."""
        try:
            discovery = list_discovery_interfaces(self.config.discovery_interfaces)
        except OSError as e:
            log.warning("cannot list discovery interfaces: %s", e)
            return
        usable = qualifying(discovery, self.config.discovery_includes_global)
        if usable and not self.discovery_open:
            self._hand_discovery_socket(usable)
        elif not usable and self.discovery_open:
            self._send_fact(channel.discovery_socket_message(False))
            self.discovery_open = False
            log.info("local discovery: no interface qualifies any more; UDP 3544 closed")
        elif not usable and not self.discovery_idle_logged:
            log.info("local discovery: no interface qualifies; UDP 3544 stays closed")
        self.discovery_idle_logged = not usable
        self._send_fact(channel.discovery_message(discovery))

    def _hand_discovery_socket(self, usable: list[tuple[str, str, str]]) -> None:
        """Open UDP 3544 (a privileged port: the parent's job) and pass it to the worker."""
        if self.control is None:
            return
        dsock = open_discovery_or_warn(usable)
        if dsock is None:
            return
        try:
            socket.send_fds(self.control, [channel.discovery_socket_message(True)],
                            [dsock.fileno()])
        except OSError as e:
            log.warning("cannot pass the discovery socket to the worker: %s", e)
        else:
            self.discovery_open = True
            log.info("local discovery on %s: UDP 3544 opened",
                     ", ".join(sorted({n for n, _ip, _m in usable})))
        finally:
            dsock.close()

    def _stop_worker(self) -> None:
        """TERM the worker and wait for it (bounded), then forget its control socket."""
        pid = self.worker_pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_exit(pid, STOP_TIMEOUT):
            log.warning("worker %d ignored SIGTERM; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._forget_worker()

    def _forget_worker(self) -> None:
        if self.control is not None:
            self.loop.remove_reader(self.control.fileno())
            self.control.close()
            self.control = None
        self.worker_pid = None
        self.worker_ready = False
        self.heartbeat.disarm()

    def _interface_down(self) -> None:
        """A client's address dies with its worker: the next one qualifies again."""
        if self.config.role == "client":
            self.interface.client_down()

    def _respawn(self) -> None:
        self.respawn_timer = None
        if self.exit_code is not None or self.worker_pid is not None:
            return
        self.restarts += 1
        if self._new_generation(self.config):
            self.respawn_delay = RESPAWN_DELAY
        else:
            self.respawn_delay = min(self.respawn_delay * 2, MAX_RESPAWN_DELAY)
            log.error("worker not started; retrying in %.0f s", self.respawn_delay)
            self.respawn_timer = self.loop.call_later(self.respawn_delay, self._respawn)

    # -- events -------------------------------------------------------------------------

    def _on_signals(self) -> None:
        assert self.signals is not None
        # a stop signal first: under `stopasgroup` the worker's exit (SIGCHLD) may be read in
        # the same batch and must not be taken for a crash
        for signum in sorted(set(self.signals.drain()), key=lambda s: s not in STOP_SIGNALS):
            if signum in STOP_SIGNALS:
                if self.exit_code is None:
                    log.info("exiting on signal %s", signame(signum))
                    self.exit_code = 0
                    self.loop.stop()
            elif signum == signal.SIGHUP:
                try:
                    self.reload()
                except Exception as e:  # a reload bug must not take the tunnel down
                    log.exception("reload failed: %s; the running configuration stays", e)
            elif signum == signal.SIGCHLD:
                self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid != self.worker_pid:
                continue
            how = (
                f"killed by signal {signame(os.WTERMSIG(status))}"
                if os.WIFSIGNALED(status)
                else f"exit code {os.WEXITSTATUS(status)}"
            )
            was_ready = self.worker_ready
            self._forget_worker()
            if self.exit_code is not None:
                return
            if not was_ready:
                log.error("worker %d failed during start-up (%s)", pid, how)
                self.exit_code = 1
                self.loop.stop()
                return
            log.warning(
                "worker %d exited unexpectedly (%s); restarting in %.0f s",
                pid,
                how,
                RESPAWN_DELAY,
            )
            self._interface_down()
            self.respawn_timer = self.loop.call_later(RESPAWN_DELAY, self._respawn)

    def _on_control(self) -> None:
        if self.control is None:
            return
        try:
            data = self.control.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker is exiting; SIGCHLD tells us how
            self.loop.remove_reader(self.control.fileno())
            return
        try:
            lines = self.control_buf.feed(data)
        except channel.RequestError as e:
            log.error("rejected request from worker: %s", e)
            return
        for line in lines:
            try:
                req = channel.parse_worker_request(line, self.config.prefix)
            except channel.RequestError as e:
                log.error("rejected request from worker: %s", e)
                continue
            try:
                self._apply(req)
            except Exception as e:
                log.exception("request %r failed: %s", req, e)

    def _apply(self, req: channel.WorkerRequest) -> None:
        if isinstance(req, channel.Ready):
            self._worker_ready()
        elif isinstance(req, channel.Up):
            if self.config.role != "client" or self.interface.tun is None:
                log.error("rejected request from worker: up: only a client changes its address")
                return
            self.interface.client_up(req.address, req.mtu)
            timer = self.netlink_timer
            if timer is not None:  # the address is on the link: now the host watch may start
                timer.cancel()
                self.netlink_timer = self.loop.call_later(0.0, timer.callback)
        elif isinstance(req, channel.Pong):
            silent = self.heartbeat.beat(time.monotonic())
            if silent is not None:
                log.warning("worker %s answers again after %.1f s", self.worker_pid, silent)
                self._stop_stand_in()
        elif isinstance(req, channel.Down):
            self._interface_down()
        elif isinstance(req, channel.Reloaded):
            if req.applied:
                log.info("configuration reloaded in place")
            else:
                log.info("configuration change needs a new worker; restarting it")
                self._restart_worker(self.config)

    def _worker_ready(self) -> None:
        """Check from outside that the worker really runs unprivileged, then report."""
        pid = self.worker_pid
        try:
            with open(f"/proc/{pid}/status") as f:
                text = f.read()
            uid = int(status_field(text, "Uid")[1])
            caps = cap_eff(text)
        except (OSError, PrivsepError, ValueError, IndexError) as e:
            log.error("cannot verify the worker's privileges: %s", e)
            uid, caps = -1, -1
        if uid != self.account.uid or caps != 0:
            log.error("worker %s still privileged (uid %s, CapEff %x); stopping", pid, uid, caps)
            self.exit_code = 1
            self.loop.stop()
            return
        self.worker_ready = True
        self.heartbeat.arm(time.monotonic())
        self._stop_stand_in()
        log.info("worker %d running as %s (uid %d)", pid, self.account.name, uid)
        if self.on_ready is not None:
            cb, self.on_ready = self.on_ready, None
            cb(0)

    # -- heartbeat ----------------------------------------------------------------------

    def _tick(self) -> None:
        """Once per `heartbeat.INTERVAL`: judge the silence so far, then ping again."""
        self.heartbeat_timer = self.loop.call_later(heartbeat.INTERVAL, self._tick)
        pid = self.worker_pid
        if pid is None or not self.worker_ready or self.control is None:
            return
        hb = self.heartbeat
        hb.watchdog = self.config.worker_watchdog  # a reload may change it
        now = time.monotonic()
        verdict = hb.check(now)
        if verdict == heartbeat.UNRESPONSIVE:
            after = (f"; restarting it after {hb.watchdog:g} s" if hb.watchdog
                     else " (WorkerWatchdog off: not restarted)")
            log.error("worker %d unresponsive: no heartbeat for %.1f s%s",
                      pid, hb.silence(now), after)
            self._start_stand_in()
        elif verdict == heartbeat.KILL:
            log.error("worker %d unresponsive for %.1f s (WorkerWatchdog %g); killing it",
                      pid, hb.silence(now), hb.watchdog)
            self._start_stand_in()
            hb.disarm()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # SIGCHLD then takes the respawn path
            return
        with contextlib.suppress(OSError):  # a full buffer is a silent worker: judged above
            self.control.sendall(channel.ping_message())
            hb.ping(now)

    def _start_stand_in(self) -> None:
        if self.stand_in is None and self.status_listener is not None:
            self.stand_in = StatusServer(self.loop, self.status_listener, self._stand_in_answer)

    def _stop_stand_in(self) -> None:
        if self.stand_in is not None:
            self.stand_in.close()
            self.stand_in = None

    def _stand_in_answer(self, command: str) -> dict[str, Any] | None:
        """What the parent can say while its worker cannot (docs/contracts.md §4)."""
        worker = "unresponsive" if self.worker_pid is not None else "restarting"
        if command == "peers":
            return {"error": f"worker {worker}: the peer list is not available",
                    "worker": worker}
        if command != "status":
            return None
        out = dict(self.worker_info)
        out.update(
            worker=worker,
            worker_pid=self.worker_pid,
            worker_silent=round(self.heartbeat.silence(time.monotonic()), 1)
            if self.worker_pid is not None else None,
            worker_watchdog=self.config.worker_watchdog,
            worker_restarts=self.restarts,
            state=None,
        )
        return out

    def _on_host_change(self, reason: str) -> None:
        """The host's IPv4 view changed: a client's worker gets fresh discovery interfaces
        and re-qualifies at once."""
        if self.control is None or not self.worker_ready:
            return
        log.info("host network changed (%s); re-qualifying", reason)
        if self.config.discovery_enabled:
            self._send_discovery()
        with contextlib.suppress(OSError):
            self.control.sendall(channel.kick_message())

    def _on_icmp_sources(self, sources: list[bytes]) -> None:
        self._send_fact(channel.icmp_sources_message(sources))

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read and validate; apply in place, restart the worker, or keep old."""
        log.info("reloading configuration %s on SIGHUP", self.opts.config_path)
        try:
            new = load_config(self.opts.config_path, server_name=self.opts.server_name)
        except ConfigError as e:
            for problem in e.problems:
                log.error("%s", problem)
            log.error("configuration not reloaded; the running one stays")
            return
        except OSError as e:
            log.error("%s: %s; the running configuration stays", self.opts.config_path, e)
            return
        for w in new.warnings:
            log.warning("%s", w)
        set_facility(new.syslog_facility)
        if new.status_socket != self.config.status_socket:
            log.warning("StatusSocket changes take effect at the next start")
        changed = needs_new_worker(self.config, new)
        if changed or self.worker_pid is None or not self.worker_ready:
            if changed:
                log.info("restarting the worker: %s changed", ", ".join(changed))
            self._restart_worker(new)
            return
        self.config = new
        assert self.control is not None
        try:
            self.control.sendall(channel.reload_message(new))
        except OSError as e:
            log.error("cannot send the new configuration to the worker: %s", e)

    def _restart_worker(self, new: EngineConfig) -> None:
        old = self.config
        if self.respawn_timer is not None:
            self.respawn_timer.cancel()
            self.respawn_timer = None
        self._stop_worker()
        self._interface_down()
        self.restarts += 1
        if self._new_generation(new):
            return
        log.error("keeping the previous configuration")
        self.config = old
        if not self._new_generation(old):
            self.respawn_timer = self.loop.call_later(RESPAWN_DELAY, self._respawn)

    # -- run and exit ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            while self.exit_code is None:
                self.loop.run_once()
        finally:
            self.cleanup()
        return self.exit_code or 0

    def cleanup(self) -> None:
        """Worker, interface, status socket, pid file: all gone, in that order."""
        if self.respawn_timer is not None:
            self.respawn_timer.cancel()
        if self.heartbeat_timer is not None:
            self.heartbeat_timer.cancel()
        if self.netlink_timer is not None:
            self.netlink_timer.cancel()
        self._stop_stand_in()
        self._stop_worker()
        self.interface.close()
        self.host.close()
        if self.status_listener is not None:
            self.status_listener.close()
            self.status_listener = None
            if self.status_path:
                remove_socket(self.status_path)
        if self.pidfile is not None:
            self.pidfile.release()
        if self.exit_code == 0:
            log.info("stopped")
