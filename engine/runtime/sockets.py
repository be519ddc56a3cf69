"""The engine's sockets, opened by the privileged parent and inherited by the worker.

`open_generation` opens the set one worker lives with (a *generation*: the sockets of one
config); the parent keeps none of them once the worker is forked.

Options follow miredo where they matter on the wire: DF is never set
(``IP_MTU_DISCOVER = IP_PMTUDISC_DONT``, RFC 4380 says SHOULD NOT), multicast TTL 1,
close-on-exec.  Buffers are large because a relay absorbs bursts of hundreds of megabits per
second through one socket; as root we can exceed ``net.core.rmem_max`` with the *FORCE
variants.  Sockets are non-blocking: the loop drains them in bounded batches.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable

from engine.proto.addr import TEREDO_PORT, secondary_server_address
from engine.proto.role import DiscoveryInterface
from engine.runtime.discovery_select import qualifying
from engine.runtime.logsetup import get_logger

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from engine.config import EngineConfig

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
BUFFER_BYTES = 4 * 1024 * 1024
DISCOVERY_GROUP = "224.0.0.253"

log = get_logger()


class BindError(Exception):
    """A socket cannot be opened or bound; ``str()`` names the address:port."""


def _big_buffers(sock: socket.socket, size: int) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:  # not root: the kernel caps the plain option at *mem_max
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def open_udp(
    address: str, port: int, *, reuse: bool = False, buffer_bytes: int = BUFFER_BYTES
) -> socket.socket:
    """A non-blocking UDP/IPv4 socket bound to `address:port`, DF off, big buffers."""
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    )
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _big_buffers(sock, buffer_bytes)
        try:
            sock.bind((address, port))
        except OSError as e:
            reason = e.strerror or str(e)
            if e.errno == errno.EADDRINUSE:
                reason = "address already in use (another instance or program?)"
            elif e.errno == errno.EADDRNOTAVAIL:
                reason = "address not available on this host"
            raise BindError(f"cannot bind UDP {address or '0.0.0.0'}:{port}: {reason}")
    except BaseException:
        sock.close()
        raise
    return sock


def open_discovery(interfaces: list[tuple[str, str]]) -> socket.socket:
    """The local-discovery socket: ``0.0.0.0:3544`` joined to 224.0.0.253 on each interface.

    `interfaces` is ``[(ifname, local_ipv4), ...]``.  SO_REUSEADDR lets it share 3544 with a
    server on the same host (miredo fails silently there).
    """
    sock = open_udp("0.0.0.0", TEREDO_PORT, reuse=True, buffer_bytes=256 * 1024)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        for _name, local in interfaces:
            mreq = socket.inet_aton(DISCOVERY_GROUP) + socket.inet_aton(local)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            except OSError:
                pass
        if interfaces:
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interfaces[0][1])
            )
    except BaseException:
        sock.close()
        raise
    return sock


def open_discovery_or_warn(usable: list[DiscoveryInterface]) -> socket.socket | None:
    """The discovery socket for the qualifying interfaces `usable`; None when there is none
    (nothing to serve: no socket), or with a warning when 3544 cannot be bound."""
    if not usable:
        return None
    try:
        return open_discovery([(n, ip) for n, ip, _m in usable])
    except BindError as e:  # e.g. a Teredo server on this host holds 3544
        log.warning("local discovery off: %s", e)
        return None


def open_raw6() -> socket.socket:
    """The server's raw IPv6 socket (``IPPROTO_RAW``: we supply whole IPv6 packets)."""
    try:
        sock = socket.socket(
            socket.AF_INET6,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.IPPROTO_RAW,
        )
    except OSError as e:
        raise BindError(f"cannot open a raw IPv6 socket: {e.strerror} (needs CAP_NET_RAW)")
    _big_buffers(sock, 1024 * 1024)
    return sock


def local_port(sock: socket.socket) -> str:
    ip, port = sock.getsockname()[:2]
    return f"{ip}:{port}"


def server_addresses(config: EngineConfig) -> tuple[str, str]:
    """A server's primary and secondary bind addresses (the secondary defaults to primary + 1,
    as the config loader has already checked)."""
    primary = config.server_bind_address
    if primary is None:
        raise BindError("a server needs ServerBindAddress")
    secondary = config.server_bind_address2 or secondary_server_address(primary)
    if secondary is None:
        raise BindError(f"no secondary address after {primary}")
    return primary, secondary


class Generation:
    """The sockets (and bound-address text) of one worker's life."""

    def __init__(self) -> None:
        self.udp: list[socket.socket | None] = []
        self.raw6: socket.socket | None = None
        self.bound: list[str] = []
        self.discovery: list[DiscoveryInterface] = []
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


ListDiscovery = Callable[[re.Pattern[str] | None], list[DiscoveryInterface]]


def open_generation(config: EngineConfig, list_discovery: ListDiscovery | None) -> Generation:
    """Open the UDP (and raw) sockets `config` needs; `BindError` names the address.

    The index of each socket in `Generation.udp` is the role's socket index (contracts §1):
    a server's primary and secondary; a client's or relay's main socket, and a client's
    discovery socket at index 2.  `list_discovery` lists local discovery's interfaces; None
    leaves them for later (`Generation.discovery_pending`).  The discovery socket is opened
    only when an interface qualifies (`discovery_select.qualifying`); otherwise, and while the
    list is pending, the parent opens it later, when one does, and hands it to the worker on
    the control socket (`channel.discovery_socket_message`).
    """
    gen = Generation()
    try:
        if config.role == "server":
            primary, secondary = server_addresses(config)
            gen.udp = [open_udp(primary, TEREDO_PORT), open_udp(secondary, TEREDO_PORT)]
            gen.raw6 = open_raw6()
        else:
            gen.udp = [open_udp(config.bind_address or "0.0.0.0", config.bind_port or 0)]
            gen.udp[0].setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            if config.role == "client" and config.discovery_enabled:
                if list_discovery is None:
                    gen.discovery_pending = True
                else:
                    gen.discovery = list_discovery(config.discovery_interfaces)
                    usable = qualifying(gen.discovery, config.discovery_includes_global)
                    dsock = open_discovery_or_warn(usable)
                    if dsock is not None:
                        gen.udp += [None, dsock]
                    elif usable:  # 3544 is taken: discovery off, as miredo
                        gen.discovery = []
        gen.bound = [local_port(s) for s in gen.udp if s is not None]
    except BaseException:
        gen.close()
        raise
    return gen
