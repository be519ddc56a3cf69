"""The unprivileged worker: the hot loop that drives one sans-I/O role.

It owns the UDP sockets, a duplicate of the TUN descriptor, the server's raw IPv6 socket and
the inherited status listener, all opened by the privileged parent.  Per readiness event it
drains one descriptor in a bounded batch, feeding the role; once per wake-up it empties the
role's output lists (`udp_out`, `tun_out`, `raw6_out`, `events`).  Interface changes are not
made here: they go to the parent as requests on the control socket.

The data path does not wait for the batch where waiting costs latency and saves nothing: a
packet for the TUN device is written as soon as the role produced it, and the first packet a
TUN wake-up reads is sent at once.  What does gain from the batch is the native -> Teredo
direction: consecutive datagrams to one peer leave in one UDP GSO `sendmsg` (`send_udp`).
Measured costs and where the time goes: `bench/micro_wakeup.py` and the commit messages.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

from engine.proto import events as ev
from engine.proto import records as dataclasses  # the subset we use, lean
from engine.proto.addr import ipv6_text
from engine.proto.records import dataclass, field
from engine.proto.role import PEERS_LISTED, DiscoveryInterface
from engine.runtime import channel, fastpath, hostfacts
from engine.runtime import entropy as secrets  # os.urandom, without importing secrets
from engine.runtime.logsetup import get_logger, set_facility
from engine.runtime.loop import Loop
from engine.runtime.privsep import Account, PrivsepError, drop_privileges
from engine.runtime.signals import set_parent_death_signal
from engine.runtime.sockets import BindError, open_udp
from engine.runtime.status_server import StatusServer

MONOTONIC_STATUS_KEYS = ("last_qualified", "last_change", "server_last_seen")
DISCOVERY_SOCK = 2
EXTRA_SOCKET_BUFFER = 256 * 1024
"""Socket buffers of a client's RFC 6081 extra sockets: one peer's traffic each."""
DISCOVERY_GROUP = "224.0.0.253"
BATCH = 64
"""Datagrams or TUN packets handled per readiness event before looking at other sources."""
PROBE_EVERY = 8
"""A reader whose last batch held one packet reads one packet per wake-up (`_udp_reader`); every
this many wake-ups it drains a batch again, to notice that a burst began."""
RECV_SIZE = 65535
SOL_UDP = 17
UDP_SEGMENT = 103
"""linux/udp.h: the segment size of a UDP GSO send (a cmsg at level SOL_UDP, Linux >= 4.18)."""
GSO_MAX_SEGMENTS = 64
"""The kernel's UDP_MAX_SEGMENTS (64 until 6.x raised it; the lower value works everywhere)."""
GSO_MAX_BYTES = 65000
"""A GSO send is one UDP datagram to the stack until segmentation: stay under 64 KiB."""
GSO_FATAL = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
"""errnos that say this path cannot do UDP GSO (no checksum offload, MTU, old kernel)."""

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any

    from engine.config.model import EngineConfig
    from engine.proto.role_protocol import Role
    from engine.runtime.upnp_keeper import UpnpKeeper

log = get_logger()


def route_source(dst: str | None) -> str | None:
    """The local IPv4 the kernel would send from towards `dst` (a connected UDP socket's
    address; nothing is sent), or None."""
    if not dst:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((dst, 3544))
            return str(s.getsockname()[0])
    except OSError:
        return None


def build_role(config: EngineConfig, now: float) -> Role:
    """The role object for `config.role`, seeded with the CSPRNG for flags, nonces and keys.

    Each role module offers ``from_config(cfg, **kw)``; the keywords differ by role (a
    server needs no randomness), so only the ones a role takes are passed.  A client's ping
    tests carry our pid as the echo identifier, as miredo's do; the protocol core reads no
    process state, so it comes from here.
    """
    if config.role == "server":
        from engine.proto.server import ServerRole

        return ServerRole.from_config(config, now=now)
    if config.role == "client":
        from engine.proto.client import ClientRole

        return ClientRole.from_config(
            config,
            randbits=secrets.randbits,
            token_bytes=secrets.token_bytes,
            ping_ident=os.getpid(),
            now=now,
        )
    from engine.proto.relay import RelayRole

    return RelayRole.from_config(config, token_bytes=secrets.token_bytes, now=now)


def needs_new_worker(old: EngineConfig, new: EngineConfig) -> list[str]:
    """Config fields whose change needs new sockets, interface or role: restart the worker.

    Everything else (syslog facility, discovery netmask, server addresses...) is applied in
    place by the running worker, so the tunnel, the address and the peers survive a HUP.
    """
    names = [
        "role",
        "relay_type",
        "bind_address",
        "bind_port",
        "server_bind_address",
        "server_bind_address2",
        "interface_name",
        "local_discovery",
        "discovery_interfaces",
    ]
    if new.role in ("relay", "server"):
        names += ["prefix", "interface_mtu"]
    return [n for n in names if getattr(old, n) != getattr(new, n)]


def role_fields_changed(old: EngineConfig, new: EngineConfig) -> bool:
    """True when something besides logging/bookkeeping differs (the role must reconfigure)."""
    ignore = {"syslog_facility", "lines", "warnings", "path", "status_socket", "worker_watchdog"}
    if not (dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new)):
        return old != new
    for f in dataclasses.fields(old):
        if f.name not in ignore and getattr(old, f.name) != getattr(new, f.name, None):
            return True
    return False


def jsonable(value: Any) -> Any:
    """Make role status values JSON-ready: addresses as text, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) == 16:
            return ipv6_text(b)
        if len(b) == 4:
            return socket.inet_ntoa(b)
        return b.hex()
    return value


@dataclass
class WorkerResources:
    """Descriptors handed over by the parent for one worker generation."""

    udp: list[socket.socket | None]
    control: socket.socket
    status_listener: socket.socket | None = None
    tun_fd: int | None = None
    raw6: socket.socket | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Static status fields: version, pid, role, config, started, interface, bound..."""
    discovery: list[tuple[str, str, str]] = field(default_factory=list)
    """Local-discovery interfaces ``(name, ipv4, netmask)`` (client with discovery on)."""


def collector_status() -> dict[str, Any]:
    """The worker's cyclic collector, for the status answer: on or off (it must be on once
    the worker runs: `Worker.run`), how many objects the start-up froze out of its sight, and
    the collections of each generation so far (a full one, generation 2, is what stalls the
    packet path: docs/performance.md, "Peers out of the collector's sight")."""
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
            "collections": [g["collections"] for g in gc.get_stats()]}


class Worker:
    """One role, its descriptors and the loop that joins them."""

    def __init__(
        self,
        config: EngineConfig,
        role: Role,
        res: WorkerResources,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.role = role
        self.res = res
        self.clock = clock
        self.loop: Loop = fastpath.new_loop(clock)
        self.drops: Counter[str] = Counter()
        self.address: bytes | None = None
        self.mtu: int | None = None
        self.state: str | None = None
        self._control_buf = channel.LineBuffer(limit=8 * 1024 * 1024)
        self._control_fds: list[int] = []
        """Descriptors received on the control socket, claimed in order by the lines that
        announce them (`discovery_socket`)."""
        self._udp = res.udp
        # The role's output lists never change identity: bind them once for the hot path.
        self._udp_out = role.udp_out
        self._tun_out = role.tun_out
        self._raw6_out = role.raw6_out
        self._gso = gso_supported(res.udp[0] if res.udp else None)
        for idx, sock in enumerate(res.udp):
            if sock is not None:
                self.loop.add_reader(sock.fileno(), self._udp_reader(idx, sock))
        if res.tun_fd is not None:  # a server has none
            self.loop.add_reader(res.tun_fd, self._tun_reader(res.tun_fd))
        self.loop.add_reader(res.control.fileno(), self._on_control)
        self.status_server = (
            StatusServer(self.loop, res.status_listener, self.answer)
            if res.status_listener is not None
            else None
        )
        self.loop.set_deadline_source(role.next_timer, self._on_timer)
        self.loop.after_batch = self.flush
        # the compiled data path takes the TUN and UDP readers registered above, if it can
        # (engine/runtime/fastpath.py; docs/performance.md, "Compiled fast path")
        self.data_path = (self.loop.bind(self) if isinstance(self.loop, fastpath.FastLoop)
                          else fastpath.PYTHON)
        res.info["data_path"] = self.data_path
        # RFC 6081 §3.3: a client may ask for extra UDP sockets (one per peer behind a
        # port-preserving symmetric NAT); only a client has the list, so it is looked up once
        # here rather than declared by every role.
        self._socket_requests: list[tuple[int, int]] | None = getattr(
            role, "socket_requests", None)
        main = res.udp[0] if res.udp else None
        if main is not None:
            ip, port = main.getsockname()[:2]
            if ip == "0.0.0.0":  # hairpinning offers the address peers behind our NAT use
                ip = route_source(getattr(config, "server_address", None)) or ip
            role.set_local_endpoint(ip, port, self._socket_requests is not None)
        # RFC 6081 §3.2 (docs/protocol.md §13.8): a client maps its port on the LAN's UPnP
        # IGD from a thread of its own; the outcome reaches the role on the loop's thread.
        self._upnp: UpnpKeeper | None = None
        if getattr(config, "upnp_symmetric_nat", None) is True and main is not None:
            if ip == "0.0.0.0":
                role.set_upnp_mapping(None, "no LAN address to search from")
            else:
                # imported here, before the worker drops privileges (run_worker), and only
                # by a client that uses it: http.client and xml cost the relay nothing
                from engine.runtime.upnp_keeper import UpnpKeeper

                self._upnp = UpnpKeeper(ip, port)
                self.loop.add_reader(self._upnp.fileno(), self._on_upnp)

    # -- inputs -------------------------------------------------------------------------

    def _udp_reader(self, idx: int, sock: socket.socket) -> Callable[[], None]:
        """The reader of one UDP socket: drain it in a bounded batch.

        What the first datagram of a wake-up yields for the TUN device is written at once: a
        lone packet (a ping, a TCP ACK) must not wait for the read that finds the socket
        empty.  The rest of a burst is written after the batch: alternating recvfrom(2) and
        write(2) per packet cost ~5-10 % of the Teredo -> native throughput in the lab
        (the two kernel paths evict each other from the caches), for no gain in latency
        under load that a ping could see.  Datagrams the role sends in answer (bubbles, RAs,
        pings) go out once per batch, where GSO can group them.

        A batch that found one datagram says the traffic comes one packet per wake-up: the next
        `PROBE_EVERY` - 1 wake-ups read one datagram and go back to epoll, which (level
        triggered) calls again at once if more is queued.  That spares each lone packet the
        read that finds the socket empty, a syscall and an exception (3.3 us on the lab VM,
        more than the worker's own Python per packet); a batch every `PROBE_EVERY` wake-ups
        notices a burst.
        """
        recvfrom = sock.recvfrom
        rx = self.role.receive_datagram
        clock = self.clock
        drops = self.drops
        tout = self._tun_out
        uout = self._udp_out
        send = self.send_udp
        write_tun = self._write_tun

        lone = 0  # wake-ups left in which to read one datagram and not look for more

        def on_readable() -> None:
            nonlocal lone
            now = clock()
            if lone:
                lone -= 1
                try:
                    data, src = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # e.g. a queued ICMP error; epoll calls again for the data
                    drops["udp_recv_error"] += 1
                    return
                rx(data, src, idx, now)
                if tout:
                    write_tun(tout)
                if uout:
                    send(uout)
                return
            got = 0
            for _ in range(BATCH):
                try:
                    data, src = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. a queued ICMP error; the next read gets data
                    drops["udp_recv_error"] += 1
                    continue
                rx(data, src, idx, now)
                got += 1
                if got == 1 and tout:
                    write_tun(tout)
            if got == 1:
                lone = PROBE_EVERY - 1
            if tout:
                write_tun(tout)
            if uout:
                send(uout)

        return on_readable

    def _tun_reader(self, fd: int) -> Callable[[], None]:
        """The TUN reader: drain the device in a bounded batch.

        The first packet of a wake-up is sent as soon as the role has handled it: a lone
        packet (a ping, a TCP ACK) must not wait for the read that finds the device empty.
        The rest of a burst is sent after the batch on purpose: consecutive packets to one
        peer (a TCP or UDP stream) then leave in one GSO `sendmsg`, which is what makes the
        native -> Teredo direction cheap.  Lone packets are read one per wake-up, as in
        `_udp_reader`.
        """
        read = os.read
        rx = self.role.receive_tun_packet
        clock = self.clock
        drops = self.drops
        uout = self._udp_out
        tout = self._tun_out
        send = self.send_udp
        write_tun = self._write_tun

        lone = 0  # wake-ups left in which to read one packet and not look for more

        def on_readable() -> None:
            nonlocal lone
            now = clock()
            if lone:
                lone -= 1
                try:
                    pkt = read(fd, RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    drops["tun_read_error"] += 1
                    return
                if len(pkt) < 40:  # like miredo: too short to be IPv6
                    drops["tun_short"] += 1
                    return
                rx(pkt, now)
                if uout:
                    send(uout)
                if tout:
                    write_tun(tout)
                return
            got = 0
            for _ in range(BATCH):
                try:
                    pkt = read(fd, RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    drops["tun_read_error"] += 1
                    break
                if len(pkt) < 40:  # like miredo: too short to be IPv6
                    drops["tun_short"] += 1
                    continue
                rx(pkt, now)
                got += 1
                if got == 1 and uout:
                    send(uout)
            if got == 1:
                lone = PROBE_EVERY - 1
            if uout:
                send(uout)
            if tout:  # ICMPv6 errors for the native side
                write_tun(tout)

        return on_readable

    def _on_upnp(self) -> None:
        result = self._upnp.take() if self._upnp is not None else None
        if result is not None:
            self.role.set_upnp_mapping(*result)

    def _on_timer(self, now: float) -> None:
        self.role.handle_timer(now)

    def _on_control(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.res.control, 65536, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        self._control_fds += fds
        if not data:  # the privileged parent is gone: nothing left to serve
            log.warning("privileged parent went away; worker exiting")
            self.loop.stop()
            return
        for line in self._control_buf.feed(data):
            op, payload = channel.parse_parent_message(line)
            if op == "ping":
                self.send(channel.PONG)
            elif op == "kick":
                self._kick()
            elif op == "reload":
                self._reload(payload)
            elif op == "stop":
                self.loop.stop()
            elif op == "discovery_socket":
                if payload:
                    self.take_discovery_socket(
                        self._control_fds.pop(0) if self._control_fds else None)
                else:
                    self.drop_discovery_socket()
            elif op in channel.FACT_OPS:
                hostfacts.handle(self, line)

    def _kick(self) -> None:
        self.role.kick(self.clock())

    def _reload(self, new: EngineConfig) -> None:
        """Apply a validated config in place; tell the parent whether that was enough."""
        old, applied = self.config, True
        set_facility(new.syslog_facility)
        if role_fields_changed(old, new):
            applied = bool(self.role.reconfigure(new, self.clock()))
        if applied:
            self.config = new
        self.send(channel.encode({"op": "reloaded", "applied": applied}))

    # -- outputs ------------------------------------------------------------------------

    def flush(self) -> None:
        """After every wake-up: whatever the callbacks and timers left in the role's lists."""
        if self._udp_out:
            self.send_udp(self._udp_out)
        if self._tun_out:
            self._write_tun(self._tun_out)
        rout = self._raw6_out
        if rout:
            self._send_raw6(rout)
            rout.clear()
        events = self.role.events
        if events:
            for event in events:
                self._on_event(event)
            events.clear()

    def _write_tun(self, tout: list[bytes]) -> None:
        fd = self.res.tun_fd
        drops = self.drops
        for pkt in tout:
            try:
                os.write(fd, pkt)  # type: ignore[arg-type]
            except (BlockingIOError, InterruptedError):
                drops["tun_write_would_block"] += 1
            except (OSError, TypeError):
                drops["tun_write_error"] += 1
        tout.clear()

    def send_udp(self, out: list[tuple[int, bytes, tuple[str, int]]]) -> None:
        """Send and clear `out`, in order; consecutive datagrams from one socket to one
        destination whose sizes allow it leave in one UDP GSO `sendmsg`.

        The kernel cuts a GSO send into datagrams of `size` bytes (the last may be shorter),
        the same datagrams as one `sendto` each, so nothing changes on the wire; but the
        stack (routing, netfilter, the qdisc) is crossed once per train instead of once per
        packet.  A path that cannot do GSO turns it off for this worker and the train goes
        out one by one.
        """
        if self._socket_requests:
            self.open_requested_sockets(self._socket_requests)
        socks = self._udp
        drops = self.drops
        n = len(out)
        if n == 1:  # the common case at low rates: no train to look for
            idx, payload, dst = out[0]
            out.clear()
            if idx == DISCOVERY_SOCK:
                self._announce(payload, dst)
                return
            try:
                socks[idx].sendto(payload, dst)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                drops["udp_send_would_block"] += 1
            except OSError:
                drops["udp_send_error"] += 1
            except (AttributeError, IndexError, TypeError):
                drops["udp_no_socket"] += 1
            return
        gso = self._gso
        i = 0
        while i < n:
            idx, payload, dst = out[i]
            i += 1
            if idx == DISCOVERY_SOCK:
                self._announce(payload, dst)
                continue
            if gso and i < n:
                size = len(payload)
                total = size
                j = i
                while j < n and j - i < GSO_MAX_SEGMENTS - 1:
                    nidx, npay, ndst = out[j]
                    if nidx != idx or (ndst is not dst and ndst != dst):
                        break
                    ln = len(npay)
                    if ln > size or total + ln > GSO_MAX_BYTES:
                        break
                    total += ln
                    j += 1
                    if ln < size:  # only the last segment of a train may be shorter
                        break
                if j > i:
                    train = [payload]
                    train += [out[k][1] for k in range(i, j)]
                    i = j
                    if self._send_train(idx, train, size, dst):
                        continue
                    gso = False
                    for pkt in train:
                        self._sendto(idx, pkt, dst)
                    continue
            try:
                socks[idx].sendto(payload, dst)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                drops["udp_send_would_block"] += 1
            except OSError:
                drops["udp_send_error"] += 1
            except (AttributeError, IndexError, TypeError):
                drops["udp_no_socket"] += 1
        out.clear()

    def _sendto(self, idx: int, payload: bytes, dst: tuple[str, int]) -> None:
        try:
            self._udp[idx].sendto(payload, dst)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            self.drops["udp_send_would_block"] += 1
        except OSError:
            self.drops["udp_send_error"] += 1
        except (AttributeError, IndexError, TypeError):
            self.drops["udp_no_socket"] += 1

    def _send_train(self, idx: int, train: list[bytes], size: int, dst: tuple[str, int]) -> bool:
        """One GSO send; False (and GSO off from now on) when this path cannot do GSO."""
        drops = self.drops
        try:
            self._udp[idx].sendmsg(  # type: ignore[union-attr]
                train, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, dst
            )
        except (BlockingIOError, InterruptedError):
            drops["udp_send_would_block"] += len(train)
        except OSError as e:
            if e.errno in GSO_FATAL:
                self._gso = False
                log.info("UDP GSO refused (%s); sending datagrams one by one", e.strerror)
                return False
            drops["udp_send_error"] += len(train)
        except (AttributeError, IndexError, TypeError):
            drops["udp_no_socket"] += len(train)
        return True

    def _announce(self, payload: bytes, dst: tuple[str, int]) -> None:
        """A discovery announcement leaves from the *main* socket, once per discovery
        interface, so LAN peers learn the mapping they must use (contracts.md §1)."""
        sock = self._udp[0] if self._udp else None
        if sock is None or not self.res.discovery:
            self.drops["discovery_no_interface"] += 1
            return
        for _name, local, _mask in self.res.discovery:
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
                sock.sendto(payload, dst)
            except OSError:
                self.drops["discovery_send_error"] += 1

    def set_discovery(self, ifaces: list[DiscoveryInterface]) -> None:
        """New discovery interfaces (host addresses changed): role, memberships, sends."""
        old = {ip for _n, ip, _m in self.res.discovery}
        self.res.discovery = ifaces
        self.role.set_discovery_interfaces(ifaces)
        dsock = self._udp[DISCOVERY_SOCK] if len(self._udp) > DISCOVERY_SOCK else None
        if dsock is None:
            return
        for _n, ip, _m in ifaces:
            if ip not in old:
                mreq = socket.inet_aton(DISCOVERY_GROUP) + socket.inet_aton(ip)
                try:
                    dsock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                except OSError:
                    pass

    def take_discovery_socket(self, fd: int | None) -> None:
        """The parent opened UDP 3544 once an interface qualified for local discovery (it is
        never open without one: issue 9 flaw 4); serve it like the other UDP sockets."""
        if fd is None:
            log.error("discovery socket announced without a descriptor")
            return
        self.drop_discovery_socket()
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        udp = self._udp
        while len(udp) <= DISCOVERY_SOCK:
            udp.append(None)
        udp[DISCOVERY_SOCK] = sock
        self.loop.add_reader(sock.fileno(), self._udp_reader(DISCOVERY_SOCK, sock))
        for _n, ip, _m in self.res.discovery:
            mreq = socket.inet_aton(DISCOVERY_GROUP) + socket.inet_aton(ip)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            except OSError:
                pass  # already joined by the parent
        self._update_bound()

    def open_requested_sockets(self, requests: list[tuple[int, int]]) -> None:
        """Open (port > 0) or close (port 0) the extra sockets a client asked for, before
        the datagrams that use them are sent.  The worker is unprivileged, so a port below
        1024 fails like any other bind error: counted, and the datagrams for that socket
        are then dropped as `udp_no_socket` (the peer stays reachable the RFC 4380 way)."""
        udp = self._udp
        for idx, port in requests:
            if idx <= DISCOVERY_SOCK:
                self.drops["extra_socket_refused"] += 1
                continue
            while len(udp) <= idx:
                udp.append(None)
            old = udp[idx]
            if old is not None:
                self.loop.remove_reader(old.fileno())
                old.close()
                udp[idx] = None
            if not port:
                continue
            try:  # on the main socket's address (BindAddress), so the NAT sees one host
                ip = udp[0].getsockname()[0] if udp and udp[0] is not None else "0.0.0.0"
                sock = open_udp(ip, port, buffer_bytes=EXTRA_SOCKET_BUFFER)
            except (BindError, OSError):
                self.drops["extra_socket_bind"] += 1
                continue
            udp[idx] = sock
            self.loop.add_reader(sock.fileno(), self._udp_reader(idx, sock))
        requests.clear()

    def drop_discovery_socket(self) -> None:
        """No interface qualifies any more: UDP 3544 has nothing to serve, so it goes."""
        udp = self._udp
        if len(udp) > DISCOVERY_SOCK and udp[DISCOVERY_SOCK] is not None:
            sock = udp[DISCOVERY_SOCK]
            assert sock is not None
            self.loop.remove_reader(sock.fileno())
            sock.close()
            udp[DISCOVERY_SOCK] = None
            self._update_bound()

    def _update_bound(self) -> None:
        """`bound` in the status follows the discovery socket as it comes and goes."""
        if "bound" in self.res.info:
            bound = []
            for s in self._udp:
                if s is not None:
                    ip, port = s.getsockname()[:2]
                    bound.append(f"{ip}:{port}")
            self.res.info["bound"] = bound

    def _send_raw6(self, packets: list[bytes]) -> None:
        sock = self.res.raw6
        for pkt in packets:
            if sock is None or len(pkt) < 40:
                self.drops["raw6_no_socket" if sock is None else "raw6_short"] += 1
                continue
            dst = socket.inet_ntop(socket.AF_INET6, bytes(pkt[24:40]))
            try:
                sock.sendto(pkt, (dst, 0))
            except OSError:
                self.drops["raw6_send_error"] += 1

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ev.InterfaceUp):
            self.address, self.mtu = bytes(event.address), event.mtu
            self.send(channel.up_message(self.address, event.mtu))
        elif isinstance(event, ev.InterfaceDown):
            self.address = None
            self.send(channel.encode({"op": "down"}))
        elif isinstance(event, ev.StateChanged):
            self.state = event.state
            detail = f": {event.detail}" if event.detail else ""
            log.info("state %s%s", event.state, detail)
        elif isinstance(event, ev.ServerLost):
            log.warning("lost the Teredo server (no reply to router solicitations)")
        elif isinstance(event, ev.MappingChanged):
            old = f"{event.old[0]}:{event.old[1]}" if event.old else "none"
            new = f"{event.new[0]}:{event.new[1]}" if event.new else "none"
            log.info("mapping changed: %s -> %s", old, new)
        else:
            log.info("event %r", event)

    def send(self, data: bytes) -> None:
        try:
            self.res.control.sendall(data)
        except OSError:
            pass

    # -- status -------------------------------------------------------------------------

    def answer(self, command: str) -> dict | None:
        if command == "status":
            return self.status()
        if command == "peers":
            return self.peers()
        return None

    def peers(self) -> dict[str, Any]:
        """The `peers` command (contracts.md §4): the role's peer rows, times made wall clock.

        Peer times are whole seconds of the monotonic clock (the peer table's rules), so a
        converted time may be up to a second early.
        """
        now = self.clock()
        listing = jsonable(self.role.list_peers(now, PEERS_LISTED))
        offset = time.time() - now
        for row in listing["peers"]:
            for key in ("last_rx", "last_tx"):
                row[key] = offset + row[key]
        return listing

    def status(self) -> dict:
        out: dict[str, Any] = dict(self.res.info)
        out["worker_pid"] = os.getpid()
        out["worker"] = "running"  # the parent answers "unresponsive" when this one is frozen
        out["state"] = self.state
        if self.address is not None:
            out["address"] = ipv6_text(self.address)
        if self.mtu is not None:
            out["mtu"] = self.mtu
        for k, v in jsonable(self.role.status()).items():
            if k == "started":
                continue  # the process start time from the parent is the one that counts
            if v is not None or k not in out:
                out[k] = v
        for key in MONOTONIC_STATUS_KEYS:  # roles speak monotonic time, status wall clock
            value = out.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = time.time() - (self.clock() - value)
        cdict: dict[str, Any] = self.role.counters.as_dict()
        drops = dict(cdict.get("drops", {}))
        for reason, n in self.drops.items():
            drops[reason] = drops.get(reason, 0) + n
        cdict["drops"] = drops
        out["counters"] = cdict
        if self.status_server is not None:
            out["status_socket"] = {
                "clients": len(self.status_server.clients), **self.status_server.stats
            }
        out["gc"] = collector_status()
        return out

    # -- life cycle ---------------------------------------------------------------------

    def run(self) -> None:
        # Everything built so far (modules, config, role) lives as long as the worker: move
        # it out of the collector's sight, so that the full collections a busy peer table
        # eventually triggers scan the peers and not tens of thousands of import-time objects
        # (a multi-millisecond stall in the forwarding path otherwise).
        gc.collect()
        gc.freeze()
        gc.enable()  # a client's is off since launch (`engine.launch`), as in the parent
        log.info("data path: %s", self.data_path)
        self.send(channel.encode({"op": "ready"}))
        self.flush()  # events the role queued while it was being built
        if self._upnp is not None:
            self._upnp.start()
        self.loop.run()

    def close(self) -> None:
        if self._upnp is not None:
            self.loop.remove_reader(self._upnp.fileno())
            self._upnp.stop()  # DeletePortMapping
            self._upnp = None
        if self.status_server is not None:
            self.status_server.close()
        for fd in self._control_fds:
            os.close(fd)
        self._control_fds.clear()
        self.loop.close()


def gso_supported(sock: socket.socket | None) -> bool:
    """Whether the kernel knows UDP_SEGMENT (Linux >= 4.18): setting it to 0 is a no-op.

    ``TEREDO_NO_GSO=1`` in the environment turns it off (to compare, or to rule it out).
    """
    if sock is None or os.environ.get("TEREDO_NO_GSO"):
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except (OSError, AttributeError, TypeError):
        return False
    return True


class WorkerSignals:
    """TERM/INT/QUIT stop the worker; HUP belongs to the parent; USR1/2 are ignored."""

    def __init__(self, worker: Worker) -> None:
        from engine.runtime.signals import SignalPipe

        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        self.pipe = SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        self.worker = worker
        worker.loop.add_reader(self.pipe.fileno(), self._on_signal)

    def _on_signal(self) -> None:
        if self.pipe.drain():
            self.worker.loop.stop()


def run_worker(
    config: EngineConfig, res: WorkerResources, account: Account, chrootdir: str | None
) -> int:
    """The forked worker's whole life: build the role, drop root, run the loop; the exit code.

    The parent has already let go of what is its alone (signal pipe, pid-file lock, rtnetlink
    sockets).  The role and the worker are built before `drop_privileges`: their imports must
    happen while the interpreter can still read the stdlib (a chroot, or nobody, may not).
    """
    worker = Worker(config, build_role(config, time.monotonic()), res)
    if res.discovery:
        worker.set_discovery(res.discovery)
    WorkerSignals(worker)
    try:
        drop_privileges(account, chrootdir)
    except (OSError, PrivsepError) as e:
        log.error("cannot drop privileges: %s", e)
        return 1
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the death signal was armed
        return 0
    worker.run()
    worker.close()
    return 0
