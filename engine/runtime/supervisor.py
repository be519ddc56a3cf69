"""The privileged parent: pid file, TUN, sockets, interface changes, signals, respawn.

It stays small on purpose.  It opens what needs root, forks a worker per *generation*
(a set of sockets for one config), and afterwards only (a) applies validated interface
requests from the worker to its own interface index, (b) watches the host over rtnetlink:
IPv4 addresses and links so a client re-qualifies at once, global IPv6 addresses for a
relay's ICMPv6 errors (sent to the worker as host facts, `engine.runtime.hostfacts`),
(c) turns signals into a clean exit, a reload or a respawn.

All rtnetlink work is pyroute2's (`engine.runtime.netlink`), and importing pyroute2 takes
0.15-0.3 s, longer than a whole qualification in a LAN.  So that module is imported lazily:
a client's parent forks its worker first and imports pyroute2 while the worker qualifies
(the worker's "up" request waits in the control socket meanwhile).  A relay imports it before
its worker: it must have its route before it serves, and nothing waits on its start-up.

It holds the TUN descriptor and the status socket across generations: a SIGHUP that only
needs new sockets restarts the worker while the interface and the socket path stay.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import engine
from engine.config import ConfigError, load_config
from engine.config.values import prefix_text
from engine.runtime import channel
from engine.runtime.logsetup import get_logger, set_facility
from engine.runtime.loop import Loop, Timer
from engine.runtime.pidfile import PidFile
from engine.runtime.privsep import Account, PrivsepError, cap_eff, drop_privileges, status_field
from engine.runtime.signals import SignalPipe, ignore_user_signals, set_parent_death_signal
from engine.runtime.signals import name as signame
from engine.runtime.sockets import BindError, local_port, open_discovery, open_raw6, open_udp
from engine.runtime.status_server import StatusSocketError, create_listener, remove_socket
from engine.runtime.tun import Tun, TunError, open_tun
from engine.runtime.worker import (
    Worker,
    WorkerResources,
    WorkerSignals,
    build_role,
    needs_new_worker,
)

if TYPE_CHECKING:  # imported lazily at run time: it imports pyroute2
    from engine.runtime.netlink import AddressWatcher, SourceAddressWatcher, TunnelInterface

log = get_logger()

RESPAWN_DELAY = 1.0
STOP_TIMEOUT = 5.0
TEREDO_PORT = 3544


class StartupError(Exception):
    """Set-up failed; ``str()`` is the one line the user sees (exit code 1)."""


def _secondary(primary: str) -> str:
    return str(ipaddress.IPv4Address(primary) + 1)


IFF_MULTICAST = 0x1000


def _netlink() -> ModuleType:
    """`engine.runtime.netlink`, imported on first use (it imports pyroute2: 0.15-0.3 s)."""
    from engine.runtime import netlink

    return netlink


def netlink_loaded() -> bool:
    return "engine.runtime.netlink" in sys.modules


def prefixlen_netmask(prefixlen: int) -> str:
    """Dotted IPv4 netmask of a prefix length (discovery interfaces' netmask)."""
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)


def _discovery_interfaces(config: Any) -> list[tuple[str, str, str]]:
    """(ifname, IPv4, netmask) of the host's discovery candidates (`select_discovery`)."""
    links, addresses = _netlink().host_links_and_ipv4()
    return select_discovery(links, addresses, getattr(config, "discovery_interfaces", None))


def prepare_interface(ifname: str) -> None:
    """Before the link first comes up: IPv6 on, no kernel-generated link-local.

    A TUN device is NOARP, so no DAD runs; the kernel would however add its own random
    link-local on some kernels, and the Teredo link-local is the only one we want.  (/proc
    writes, no rtnetlink: this runs before a client's parent has imported pyroute2.)
    """
    for key, value in (("disable_ipv6", "0"), ("addr_gen_mode", "1")):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
                f.write(value)
        except OSError:
            pass


def select_discovery(links: list[Any], addresses: list[Any], pattern: Any
                     ) -> list[tuple[str, str, str]]:
    """miredo's rule (§9): every IPv4 address of a multicast-capable interface whose name
    matches `DiscoveryInterfaces` (unanchored); loopback excluded.  Whether global addresses
    count is the role's business (`LocalDiscovery forced`)."""
    by_index = {link.index: link for link in links}
    out: list[tuple[str, str, str]] = []
    for addr in addresses:
        link = by_index.get(addr.index)
        if link is None or not link.flags & IFF_MULTICAST or addr.address.startswith("127."):
            continue
        if pattern is not None and not pattern.search(link.name):
            continue
        out.append((link.name, addr.address, prefixlen_netmask(addr.prefixlen)))
    return out


class Generation:
    """The sockets (and bound-address text) of one worker's life."""

    def __init__(self) -> None:
        self.udp: list[socket.socket | None] = []
        self.raw6: socket.socket | None = None
        self.bound: list[str] = []
        self.discovery: list[tuple[str, str, str]] = []
        self.discovery_pending = False
        """Discovery is on but its interfaces are not listed yet (the parent lists them after
        the fork, once pyroute2 is imported, and sends them as a host fact)."""

    def close(self) -> None:
        for s in self.udp:
            if s is not None:
                s.close()
        if self.raw6 is not None:
            self.raw6.close()
        self.udp, self.raw6 = [], None


def open_generation(
    config: Any, list_discovery: Callable[[Any], list[tuple[str, str, str]]] | None
) -> Generation:
    """Open the UDP (and raw) sockets `config` needs; `BindError` names the address.

    `list_discovery` lists local discovery's interfaces; None leaves them for later
    (`Generation.discovery_pending`): the discovery socket is bound now, and the worker joins
    the multicast group on each interface when the list arrives.
    """
    gen = Generation()
    try:
        if config.role == "server":
            primary = config.server_bind_address
            secondary = config.server_bind_address2 or _secondary(primary)
            gen.udp = [open_udp(primary, TEREDO_PORT), open_udp(secondary, TEREDO_PORT)]
            gen.raw6 = open_raw6()
        else:
            gen.udp = [open_udp(config.bind_address or "0.0.0.0", config.bind_port or 0)]
            gen.udp[0].setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            if config.role == "client" and getattr(config, "discovery_enabled", False):
                if list_discovery is not None:
                    gen.discovery = list_discovery(config)
                try:
                    dsock = open_discovery([(n, ip) for n, ip, _m in gen.discovery])
                except BindError as e:  # e.g. a Teredo server on this host holds 3544
                    log.warning("local discovery off: %s", e)
                    gen.discovery = []
                else:
                    gen.udp += [None, dsock]
                    gen.discovery_pending = list_discovery is None
        gen.bound = [local_port(s) for s in gen.udp if s is not None]
    except BaseException:
        gen.close()
        raise
    return gen


class Supervisor:
    """One engine instance's privileged parent."""

    def __init__(self, config: Any, opts: Any, account: Account) -> None:
        self.config = config
        self.opts = opts
        self.account = account
        self.loop = Loop()
        self.pidfile: PidFile | None = PidFile(opts.pidfile) if opts.pidfile else None
        self.status_path: str | None = opts.status_socket
        self.status_listener: socket.socket | None = None
        self.tun: Tun | None = None
        self.iface: TunnelInterface | None = None
        self.watcher: AddressWatcher | None = None
        self.sources: SourceAddressWatcher | None = None
        self.signals: SignalPipe | None = None
        self.worker_pid: int | None = None
        self.worker_ready = False
        self.control: socket.socket | None = None
        self.control_buf = channel.LineBuffer()
        self.stopping_worker = False
        self.respawn_timer: Timer | None = None
        self.respawn_delay = RESPAWN_DELAY
        self.exit_code: int | None = None
        self.started = time.time()
        self.on_ready = None  # daemon mode: report success to the launcher once
        self.restarts = 0

    # -- set-up -------------------------------------------------------------------------

    def start(self) -> None:
        """Everything that needs root, in miredo's order; raises `StartupError`."""
        ignore_user_signals()
        self.signals = SignalPipe(
            (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
        )
        self.loop.add_reader(self.signals.fileno(), self._on_signals)
        try:
            if self.pidfile is not None:
                self.pidfile.acquire()
                self.pidfile.write(os.getpid())
            if self.status_path:
                self.status_listener = create_listener(self.status_path)
            self._open_interface(self.config)
            if self.config.role != "client":  # a client's: after the fork
                self._watch_host(self.config)
            gen = open_generation(
                self.config, _discovery_interfaces if netlink_loaded() else None
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
        self._fork_worker(gen)
        if self.config.role == "client":
            self._netlink_after_fork(gen)

    def _netlink_after_fork(self, gen: Generation) -> None:
        """A client's rtnetlink set-up, once its worker is on its way to the first RS.

        The import of pyroute2 runs here, in parallel with the worker's start-up and
        qualification; the worker's "up" request is served when this returns.
        """
        try:
            _netlink()
        except ImportError as e:
            raise StartupError(f"pyroute2 is needed to configure the interface: {e}") from None
        # the worker may have qualified during the import: its "up" is what launch-to-address
        # waits for, so it goes before the subscriptions and the discovery listing
        self._on_control()
        self._watch_host(self.config)
        if gen.discovery_pending:
            try:
                discovery = _discovery_interfaces(self.config)
            except OSError as e:
                log.warning("cannot list discovery interfaces: %s", e)
            else:
                self._send_fact(channel.discovery_message(discovery))

    def _watch_host(self, config: Any) -> None:
        """The rtnetlink subscriptions `config`'s role needs, on the current interface: a
        client's IPv4/link watcher, a relay's IPv6 source watcher; others are closed."""
        own = self.tun.index if self.tun else None
        want_watcher = config.role == "client"
        want_sources = config.role == "relay"
        if self.watcher is not None and (not want_watcher or self.watcher.own_index != own):
            self.loop.remove_reader(self.watcher.fileno())
            self.watcher.close()
            self.watcher = None
        if self.sources is not None and (not want_sources or self.sources.own_index != own):
            self.loop.remove_reader(self.sources.fileno())
            self.sources.close()
            self.sources = None
        if want_watcher and self.watcher is None:
            try:
                self.watcher = _netlink().AddressWatcher(own)
                self.loop.add_reader(self.watcher.fileno(), self._on_netlink)
            except OSError as e:
                log.warning("not watching host address changes: %s", e)
        if want_sources and self.sources is None:
            try:
                self.sources = _netlink().SourceAddressWatcher(own)
                self.loop.add_reader(self.sources.fileno(), self._on_sources)
            except OSError as e:
                log.warning("ICMPv6 errors will have a link-local source: %s", e)
            else:
                self._log_sources()

    def _open_interface(self, config: Any) -> None:
        """Create the TUN (client, relay) and, for a relay, configure it once, as root."""
        if config.role == "server":
            return
        if self.tun is None:
            self.tun = open_tun(config.interface_name)
            prepare_interface(self.tun.name)
        if config.role == "relay":
            self._iface().relay_setup(config.interface_mtu, config.prefix)
            log.info(
                "interface %s up: MTU %d, route %s/32",
                self.tun.name,
                config.interface_mtu,
                prefix_text(config.prefix),
            )

    def _iface(self) -> TunnelInterface:
        """Our interface's pyroute2 handle (the first call imports pyroute2)."""
        assert self.tun is not None
        if self.iface is None:
            self.iface = _netlink().TunnelInterface(self.tun.index, self.tun.name)
        return self.iface

    def _close_interface(self) -> None:
        if self.iface is not None:
            self.iface.teardown()
            self.iface = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None

    # -- worker generations -------------------------------------------------------------

    def _info(self, gen: Generation) -> dict[str, Any]:
        c = self.config
        server2 = getattr(c, "server_address2", None)
        if c.role == "server":
            server, server2 = c.server_bind_address, c.server_bind_address2 or _secondary(
                c.server_bind_address
            )
        else:
            server = getattr(c, "server_address", None)
        return {
            "version": engine.__version__,
            "pid": os.getpid(),
            "role": c.role,
            "relay_type": c.relay_type,
            "config": c.path,
            "started": self.started,
            "interface": self.tun.name if self.tun else None,
            "ifindex": self.tun.index if self.tun else None,
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
        info = self._info(gen)
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                parent_end.close()
                code = self._worker_main(gen, child_end, info)
            except BaseException as e:
                with contextlib.suppress(Exception):
                    log.error("worker failed: %s", e)
            finally:
                os._exit(code)
        child_end.close()
        gen.close()  # the worker owns the sockets now
        parent_end.setblocking(False)
        self.control = parent_end
        self.control_buf = channel.LineBuffer()
        self.worker_pid = pid
        self.worker_ready = False
        self.stopping_worker = False
        self.loop.add_reader(parent_end.fileno(), self._on_control)
        if self.sources is not None:
            self._send_fact(channel.icmp_sources_message(self.sources.sources))

    def _send_fact(self, line: bytes) -> None:
        if self.control is None:
            return
        try:
            self.control.sendall(line)
        except OSError as e:  # the worker is gone or stuck; its successor gets them anew
            log.warning("cannot send host facts to the worker: %s", e)

    def _worker_main(self, gen: Generation, control: socket.socket, info: dict) -> int:
        """Runs in the forked child: shed parent-only state, build the role, drop root, run."""
        if self.signals is not None:
            self.signals.close()
        if self.pidfile is not None:
            self.pidfile.close_in_child()
        for watcher in (self.watcher, self.sources):
            if watcher is not None:  # not close(): that would run pyroute2 in the worker
                watcher.close_in_child()
        if self.control is not None:
            self.control.close()
        self.loop.close()
        role = build_role(self.config, time.monotonic())  # imports happen before any chroot
        if gen.discovery and hasattr(role, "set_discovery_interfaces"):
            role.set_discovery_interfaces(gen.discovery)
        res = WorkerResources(
            udp=gen.udp,
            control=control,
            status_listener=self.status_listener,
            tun_fd=self.tun.fd if self.tun else None,
            raw6=gen.raw6,
            info=info,
            discovery=gen.discovery,
        )
        worker = Worker(self.config, role, res)
        WorkerSignals(worker)
        profile = _WorkerProfile.from_env()  # opened as root, written after the drop
        try:
            drop_privileges(self.account, self.opts.chrootdir)
        except (OSError, PrivsepError) as e:
            log.error("cannot drop privileges: %s", e)
            return 1
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() == 1:
            return 0
        if profile is not None:
            profile.run(worker.run)
        else:
            worker.run()
        worker.close()
        return 0

    def _on_sources(self) -> None:
        """The host's IPv6 addresses changed: a relay's worker gets its new error sources."""
        assert self.sources is not None
        if self.sources.drain():
            self._log_sources()
            self._send_fact(channel.icmp_sources_message(self.sources.sources))

    def _log_sources(self) -> None:
        assert self.sources is not None
        if self.sources.sources:
            text = ", ".join(socket.inet_ntop(socket.AF_INET6, a) for a in self.sources.sources)
            log.info("ICMPv6 errors from %s", text)
        else:
            log.warning(
                "no global IPv6 address on this host: ICMPv6 errors about forwarded "
                "packets cannot reach their senders"
            )

    def _stop_worker(self) -> None:
        """TERM the worker and wait for it (bounded), then forget its control socket."""
        pid = self.worker_pid
        if pid is None:
            return
        self.stopping_worker = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                log.warning("worker %d ignored SIGTERM; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        self._forget_worker()

    def _forget_worker(self) -> None:
        if self.control is not None:
            self.loop.remove_reader(self.control.fileno())
            self.control.close()
            self.control = None
        self.worker_pid = None
        self.worker_ready = False

    def _interface_down(self) -> None:
        """A client's address dies with its worker: the next one qualifies again."""
        if self.config.role == "client" and self.iface is not None and self.iface.address:
            try:
                self.iface.client_down()
                log.info("interface %s down", self.iface.name)
            except OSError as e:  # netlink.NetlinkConfigError
                log.error("%s", e)

    def _new_generation(self, config: Any) -> bool:
        """Open sockets (and interface changes) for `config` and fork; False on failure."""
        old = self.config
        try:
            if self.tun is not None and (
                config.role == "server"
                or config.role != old.role
                or config.interface_name != old.interface_name
            ):
                self._close_interface()
            self._open_interface(config)
            self._watch_host(config)
            gen = open_generation(config, _discovery_interfaces)
        except (OSError, BindError, TunError) as e:
            log.error("%s", e)
            return False
        self.config = config
        self._fork_worker(gen)
        return True

    def _respawn(self) -> None:
        self.respawn_timer = None
        if self.exit_code is not None or self.worker_pid is not None:
            return
        self.restarts += 1
        if self._new_generation(self.config):
            self.respawn_delay = RESPAWN_DELAY
        else:
            self.respawn_delay = min(self.respawn_delay * 2, 30.0)
            log.error("worker not started; retrying in %.0f s", self.respawn_delay)
            self.respawn_timer = self.loop.call_later(self.respawn_delay, self._respawn)

    # -- events -------------------------------------------------------------------------

    def _on_signals(self) -> None:
        assert self.signals is not None
        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        # a stop signal first: under `stopasgroup` the worker's exit (SIGCHLD) may be read in
        # the same batch and must not be taken for a crash
        for signum in sorted(set(self.signals.drain()), key=lambda s: s not in stops):
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
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
            if self.config.role != "client" or self.tun is None:
                log.error("rejected request from worker: up: only a client changes its address")
                return
            iface = self._iface()
            if (iface.address, iface.mtu) == (req.address, req.mtu):
                return  # already so: no flush, no blip for open connections
            try:
                iface.client_up(req.address, req.mtu)
            except OSError as e:  # netlink.NetlinkConfigError
                log.error("%s", e)
                return
            log.info(
                "interface %s up: address %s, MTU %d",
                iface.name,
                socket.inet_ntop(socket.AF_INET6, req.address),
                req.mtu,
            )
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
        log.info("worker %d running as %s (uid %d)", pid, self.account.name, uid)
        if self.on_ready is not None:
            cb, self.on_ready = self.on_ready, None
            cb(0)

    def _on_netlink(self) -> None:
        assert self.watcher is not None
        reasons = self.watcher.drain()
        if reasons and self.control is not None and self.worker_ready:
            log.info("host network changed (%s); re-qualifying", reasons[0])
            if getattr(self.config, "discovery_enabled", False):
                try:
                    self._send_fact(channel.discovery_message(_discovery_interfaces(self.config)))
                except OSError as e:
                    log.warning("cannot list discovery interfaces: %s", e)
            with contextlib.suppress(OSError):
                self.control.sendall(channel.kick_message())

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
        for w in getattr(new, "warnings", ()):
            log.warning("%s", w)
        set_facility(getattr(new, "syslog_facility", None))
        if getattr(new, "status_socket", None) != getattr(self.config, "status_socket", None):
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

    def _restart_worker(self, new: Any) -> None:
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
        self._stop_worker()
        self._close_interface()
        for watcher in (self.watcher, self.sources):
            if watcher is not None:
                watcher.close()
        self.watcher = self.sources = None
        if self.status_listener is not None:
            self.status_listener.close()
            self.status_listener = None
            if self.status_path:
                remove_socket(self.status_path)
        if self.pidfile is not None:
            self.pidfile.release()
        if self.exit_code == 0:
            log.info("stopped")


class _WorkerProfile:
    """cProfile of the worker's loop when ``TEREDO_WORKER_PROFILE=FILE`` is set.

    ``python -m cProfile -m engine`` only sees the parent: the packet path runs in a forked,
    unprivileged (maybe chrooted) worker that ends with ``os._exit``.  The output file is
    opened before privileges are dropped; the stats are ``pstats``-readable.
    """

    def __init__(self, fd: int) -> None:
        import cProfile  # imported while still root: nobody may not read the stdlib
        import marshal

        self.fd = fd
        self._profile_cls = cProfile.Profile
        self._marshal = marshal

    @classmethod
    def from_env(cls) -> _WorkerProfile | None:
        path = os.environ.get("TEREDO_WORKER_PROFILE")
        if not path:
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            log.warning("worker profile %s: %s", path, e.strerror)
            return None
        return cls(fd)

    def run(self, fn) -> None:
        sys.setprofile(None)  # an inherited parent profiler would mix both processes
        prof = self._profile_cls()
        try:
            prof.runcall(fn)
        finally:
            prof.create_stats()
            with os.fdopen(self.fd, "wb") as f:
                self._marshal.dump(prof.stats, f)

