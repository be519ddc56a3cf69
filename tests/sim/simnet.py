"""An in-memory IPv4/UDP network with NATs, a native IPv6 side and a fake clock.

Why this exists: every Teredo role is a sans-I/O object (docs/contracts.md §1), so the
interesting behaviour -- qualification through each NAT type, hole punching, timers, rate
limits -- can be exercised deterministically and fast by moving a fake clock instead of
sleeping, and by translating addresses in Python instead of in a kernel.

Model
-----
* `SimNet` owns the clock (`net.now`), one event heap and a seeded `random.Random`.
* A `Realm` is an IPv4 addressing domain. `net.internet` is the public one; every `Nat` creates
  an inside realm (NATs may be nested). Hosts live in exactly one realm.
* A `Host` has one or more IPv4 addresses; a role (or a `UdpProbe`) is attached to a host with
  a map *socket index -> (local ip, local port)* -- the socket indices of the contract (0 main /
  primary, 1 secondary, 2 discovery).
* A datagram a role appends to `udp_out` is routed at send time: out through the NATs above the
  sender (each one translating the source and creating/refreshing its mapping), then in through
  the NATs above the destination (each one filtering by its type and translating the
  destination). Loss, latency and jitter (hence reordering) are then applied and the delivery
  is scheduled on the heap.
* `net.ipv6` is the "native IPv6 internet": it takes the server's `raw6_out` and a relay's
  `tun_out`, delivers to `Native6Host`s by exact address and to attachments by prefix route
  (e.g. the Teredo prefix -> a relay's `receive_tun_packet`).
* Timers: after every interaction with a role the network asks `role.next_timer()` and
  schedules a call to `role.handle_timer(now)` at that time. Roles may be poked directly by a
  test (e.g. `qualifier.kick(net.now)`); the next `run_*` call picks up their output.

NAT behaviour (RFC 4787 vocabulary)
-----------------------------------
| kind              | mapping                         | inbound filtering                      |
|-------------------|---------------------------------|----------------------------------------|
| `full_cone`       | endpoint independent            | none                                   |
| `restricted`      | endpoint independent            | source IP must have been sent to       |
| `port_restricted` | endpoint independent            | source IP:port must have been sent to  |
| `symmetric`       | per destination IP:port         | only that destination IP:port          |

Mappings expire `timeout` seconds after the last outbound packet (and after inbound ones too when
`refresh_inbound`). `nat.reset()` forgets every mapping (a NAT reboot); `nat.external_ip` may be
reassigned with `net.renumber_nat()`.

Port allocation (`port_alloc`) matters for the symmetric kinds, where every new destination
gets a new external port; RFC 6081 names its extensions after it, and `SYMMETRIC_KINDS` gives
each flavour a name for `net.add_nat_kind()`:

* `symmetric_sequential` (`symmetric`, `sequential`): the next new mapping gets the NAT's
  previous port + 1 (one counter for the whole NAT);
* `symmetric_preserving` (`symmetric`, `preserve`): the inside port when no mapping holds it
  yet, else a random one;
* `symmetric_random` (`symmetric`, `random`): a random port.

`hairpin` (default False) says whether a packet from inside to the NAT's own external address
is turned back in: without it two hosts behind one NAT reach each other only on their inside
addresses (`fate` "no_hairpin").
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Endpoint = tuple[str, int]

NAT_KINDS = ("full_cone", "restricted", "port_restricted", "symmetric")

#: The symmetric NAT flavours RFC 6081 distinguishes: name -> (kind, port_alloc).
SYMMETRIC_KINDS: dict[str, tuple[str, str]] = {
    "symmetric_sequential": ("symmetric", "sequential"),
    "symmetric_preserving": ("symmetric", "preserve"),
    "symmetric_random": ("symmetric", "random"),
}

# event kinds on the heap (small ints compare fast; never compared across kinds anyway)
_DELIVER = 0
_TIMER = 1
_TUN = 2
_NATIVE = 3
_CALL = 4


class SimError(RuntimeError):
    """A wiring mistake in a test (address in use, unknown realm, a role whose timer spins)."""


@dataclass
class Realm:
    """One IPv4 addressing domain: the public internet or the inside of one NAT."""

    name: str
    parent: Nat | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    nats: dict[str, Nat] = field(default_factory=dict)  # keyed by the NAT's external IP

    def __repr__(self) -> str:
        return f"Realm({self.name})"


class Host:
    """A machine with IPv4 addresses in one realm; sockets are bound by `SimNet.attach`."""

    def __init__(self, net: SimNet, realm: Realm, ips: Iterable[str], name: str) -> None:
        self.net = net
        self.realm = realm
        self.ips = list(ips)
        self.name = name
        self.sockets: dict[Endpoint, tuple[Attachment, int]] = {}
        self._next_port = 40000

    @property
    def ip(self) -> str:
        return self.ips[0]

    def ephemeral_port(self, ip: str) -> int:
        while (ip, self._next_port) in self.sockets:
            self._next_port += 1
        port = self._next_port
        self._next_port += 1
        return port

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.ips})"


@dataclass
class _Mapping:
    inside: Endpoint
    ext_port: int
    expires: float
    permitted: set[Any] = field(default_factory=set)
    key: tuple = ()


class Nat:
    """A NAT box between `outside` realm and its own `inside` realm (see module table)."""

    def __init__(
        self,
        net: SimNet,
        kind: str,
        external_ip: str,
        outside: Realm,
        *,
        timeout: float = 120.0,
        refresh_inbound: bool = False,
        hairpin: bool = False,
        port_alloc: str = "random",
        name: str | None = None,
    ) -> None:
        if kind not in NAT_KINDS:
            raise SimError(f"NAT kind {kind!r}: expected one of {', '.join(NAT_KINDS)}")
        if port_alloc not in ("random", "sequential", "preserve"):
            raise SimError(f"port_alloc {port_alloc!r}: expected random|sequential|preserve")
        self.net = net
        self.kind = kind
        self.external_ip = external_ip
        self.outside = outside
        self.name = name or f"nat-{external_ip}"
        self.inside = Realm(f"inside:{self.name}", parent=self)
        self.timeout = timeout
        self.refresh_inbound = refresh_inbound
        self.hairpin = hairpin
        self.port_alloc = port_alloc
        self._by_key: dict[tuple, _Mapping] = {}
        self._by_port: dict[int, _Mapping] = {}
        self._seq_port = 20000
        self._forwards: dict[int, Endpoint] = {}
        self._fwd_flows: dict[tuple, tuple[int, float]] = {}  # key -> (port, expires)

    # -- a UPnP IGD's port mapping (RFC 6081 §3.2; what miniupnpd does in the kernel lab) ---
    def forward(self, ext_port: int, inside: Endpoint) -> None:
        """Map `ext_port` to `inside` for every remote, as an IGD's AddPortMapping does: a
        flow a remote starts at that port reaches `inside`, and `inside`'s packets of that
        flow leave from it.  A flow `inside` started itself keeps its own mapping (Linux
        conntrack: the remote's packet to the forwarded port then collides with it and is
        dropped, counted as `nat_forward_clash`)."""
        self._forwards[ext_port] = inside

    def unforward(self, ext_port: int) -> None:
        self._forwards.pop(ext_port, None)

    # -- translation -------------------------------------------------------------------------
    def _alive(self, m: _Mapping | None, now: float) -> _Mapping | None:
        if m is None:
            return None
        if m.expires < now:
            del self._by_key[m.key]
            del self._by_port[m.ext_port]
            return None
        return m

    def _alloc_port(self, inside: Endpoint) -> int:
        if (self.port_alloc == "preserve" and inside[1] not in self._by_port
                and inside[1] not in self._forwards):
            return inside[1]
        if self.port_alloc == "sequential":
            while self._seq_port in self._by_port:
                self._seq_port = 1024 + (self._seq_port - 1023) % 64511
            port = self._seq_port
            self._seq_port = 1024 + (self._seq_port - 1023) % 64511
            return port
        rng = self.net.rng
        while True:
            port = rng.randint(1024, 65535)
            if port not in self._by_port and port not in self._forwards:
                return port

    def outbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint:
        """Translate an inside source for a packet to `dst`, creating/refreshing the mapping."""
        key = (src, dst) if self.kind == "symmetric" else (src,)
        fwd = self._fwd_flows.get((src, dst))
        if fwd is not None and fwd[1] >= now and self._forwards.get(fwd[0]) == src:
            self._fwd_flows[(src, dst)] = (fwd[0], now + self.timeout)
            return (self.external_ip, fwd[0])
        m = self._alive(self._by_key.get(key), now)
        if m is None:
            m = _Mapping(inside=src, ext_port=self._alloc_port(src), expires=0.0, key=key)
            self._by_key[key] = m
            self._by_port[m.ext_port] = m
            self.net.stats["nat_mappings_created"] += 1
        m.expires = now + self.timeout
        if self.kind == "restricted":
            m.permitted.add(dst[0])
        elif self.kind != "full_cone":
            m.permitted.add(dst)
        return (self.external_ip, m.ext_port)

    def inbound(self, src: Endpoint, ext_port: int, now: float) -> Endpoint | None:
        """The inside endpoint for a packet from `src` to our external port, or None (filtered)."""
        inside = self._forwards.get(ext_port)
        if inside is not None:
            key = (inside, src) if self.kind == "symmetric" else (inside,)
            if (inside, src) not in self._fwd_flows and self._alive(
                    self._by_key.get(key), now) is not None and self.kind == "symmetric":
                self.net.stats["nat_forward_clash"] += 1
                return None
            self._fwd_flows[(inside, src)] = (ext_port, now + self.timeout)
            return inside
        m = self._alive(self._by_port.get(ext_port), now)
        if m is None:
            return None
        if self.kind == "restricted":
            if src[0] not in m.permitted:
                return None
        elif self.kind != "full_cone" and src not in m.permitted:
            return None
        if self.refresh_inbound:
            m.expires = now + self.timeout
        return m.inside

    def mapping_for(self, inside: Endpoint, dst: Endpoint | None = None) -> Endpoint | None:
        """The live external endpoint of `inside` (towards `dst` for a symmetric NAT), if any."""
        key = (inside, dst) if self.kind == "symmetric" else (inside,)
        m = self._alive(self._by_key.get(key), self.net.now)
        return None if m is None else (self.external_ip, m.ext_port)

    def reset(self) -> None:
        """Forget every mapping, as a NAT reboot does: the next packet gets a new port."""
        self._by_key.clear()
        self._by_port.clear()

    def __repr__(self) -> str:
        return f"Nat({self.kind}, {self.external_ip})"


class Attachment:
    """A role object wired to a host; collects what the role emitted that is not routed."""

    def __init__(self, net: SimNet, role: Any, host: Host, name: str, tun: str) -> None:
        self.net = net
        self.role = role
        self.host = host
        self.name = name
        self.tun = tun  # "log": keep tun_out in self.tun_log; "native": send to net.ipv6
        self.sockets: dict[int, Endpoint] = {}
        self.events: list[Any] = []
        self.tun_log: list[tuple[float, bytes]] = []
        self.timer_at: float | None = None
        self._spin = 0
        self._has_tun_out = hasattr(role, "tun_out")
        self._has_raw6 = hasattr(role, "raw6_out")
        self._has_events = hasattr(role, "events")
        self._has_timer = hasattr(role, "next_timer")

    def address(self, sock: int = 0) -> Endpoint:
        """The local (inside) endpoint of socket `sock`."""
        return self.sockets[sock]

    def public_address(self, sock: int = 0, towards: Endpoint | None = None) -> Endpoint | None:
        """The endpoint the internet sees for socket `sock` right now (None: no mapping yet)."""
        ep = self.sockets[sock]
        realm = self.host.realm
        while realm.parent is not None:
            nat = realm.parent
            ep2 = nat.mapping_for(ep, towards)
            if ep2 is None:
                return None
            ep, realm = ep2, nat.outside
        return ep

    def events_of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def __repr__(self) -> str:
        return f"Attachment({self.name})"


class UdpProbe:
    """A plain UDP endpoint for tests: records what it receives, sends what it is told to.

    It has the role interface (`receive_datagram`, `udp_out`) so the network treats it like
    any role; `replies` (optional) computes an answer to each datagram received.
    """

    def __init__(self, replies: Callable[[bytes, Endpoint, int], Iterable[tuple]] | None = None):
        self.udp_out: list[tuple[int, bytes, Endpoint]] = []
        self.received: list[tuple[bytes, Endpoint, int, float]] = []
        self._replies = replies

    def send(self, data: bytes, dst: Endpoint, sock: int = 0) -> None:
        self.udp_out.append((sock, data, dst))

    def receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        self.received.append((data, src, sock, now))
        if self._replies is not None:
            for sock_out, payload, dst in self._replies(data, src, sock):
                self.udp_out.append((sock_out, payload, dst))

    def payloads(self) -> list[bytes]:
        return [r[0] for r in self.received]


class Native6Host:
    """A host on the native IPv6 internet; optionally answers ICMPv6 echo requests."""

    def __init__(self, address: bytes, *, auto_echo: bool = True) -> None:
        if len(address) != 16:
            raise SimError("Native6Host address: expected 16 bytes")
        self.address = address
        self.auto_echo = auto_echo
        self.received: list[tuple[float, bytes]] = []

    def receive(self, pkt: bytes, now: float) -> bytes | None:
        self.received.append((now, pkt))
        if self.auto_echo and len(pkt) >= 48 and pkt[6] == 58 and pkt[40] == 128:
            return echo_reply_for(pkt)
        return None


def echo_reply_for(pkt: bytes) -> bytes:
    """The echo reply a host sends for `pkt` (an ICMPv6 echo request): swap src/dst, type 129.

    The checksum is updated incrementally (RFC 1624): the pseudo-header sum is symmetric in
    src and dst, so only the type byte changes (128 -> 129, +0x0100 in the first word).
    """
    plen = int.from_bytes(pkt[4:6], "big")
    icmp = bytearray(pkt[40 : 40 + plen])
    old = int.from_bytes(icmp[2:4], "big")
    icmp[0] = 129
    s = (~old & 0xFFFF) + (~0x8000 & 0xFFFF) + 0x8100
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    icmp[2:4] = (~s & 0xFFFF).to_bytes(2, "big")
    header = pkt[0:7] + bytes([64]) + pkt[24:40] + pkt[8:24]
    return bytes(header) + bytes(icmp)


class Ipv6Net:
    """The native IPv6 internet: exact host addresses first, then the longest prefix route."""

    def __init__(self, net: SimNet) -> None:
        self.net = net
        self.hosts: dict[bytes, Native6Host] = {}
        self.routes: list[tuple[int, bytes, Attachment]] = []  # (prefix bits, prefix, att)
        self.log: list[tuple[float, bytes]] = []  # every packet sent into the IPv6 side

    def add_host(self, address: bytes, *, auto_echo: bool = True) -> Native6Host:
        h = Native6Host(address, auto_echo=auto_echo)
        self.hosts[address] = h
        return h

    def add_route(self, prefix: bytes, bits: int, att: Attachment) -> None:
        """Route `prefix/bits` to `att.role.receive_tun_packet` (a relay announcing 2001::/32)."""
        self.routes.append((bits, bytes(prefix), att))
        self.routes.sort(key=lambda r: -r[0])

    def _match(self, dst: bytes) -> Attachment | None:
        as_int = int.from_bytes(dst, "big")
        for bits, prefix, att in self.routes:
            shift = 128 - bits
            if as_int >> shift == int.from_bytes(prefix.ljust(16, b"\0"), "big") >> shift:
                return att
        return None

    def send(self, pkt: bytes) -> None:
        """Send one IPv6 packet into the native internet (delivered after `net.latency`)."""
        net = self.net
        self.log.append((net.now, pkt))
        if len(pkt) < 40:
            net.stats["ipv6_malformed"] += 1
            return
        if net.loss and net.rng.random() < net.loss:
            net.stats["ipv6_lost"] += 1
            return
        net._push(net.now + net._delay(), _NATIVE, bytes(pkt), None, None, None)

    def _deliver(self, pkt: bytes) -> None:
        net = self.net
        dst = pkt[24:40]
        host = self.hosts.get(dst)
        if host is not None:
            net.stats["ipv6_delivered"] += 1
            reply = host.receive(pkt, net.now)
            if reply is not None:
                self.send(reply)
            return
        att = self._match(dst)
        if att is None:
            net.stats["ipv6_no_route"] += 1
            return
        net.stats["ipv6_delivered"] += 1
        att.role.receive_tun_packet(pkt, net.now)
        net._after(att)


@dataclass
class TraceEntry:
    time: float
    src: Endpoint  # as seen by the receiver (after NAT translation)
    dst: Endpoint  # as addressed by the sender
    payload: bytes
    fate: str  # "sent", or the reason it went nowhere
    sender: str


class SimNet:
    """The simulated network; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 0,
        start: float = 1000.0,
        latency: float = 0.005,
        jitter: float = 0.0,
        loss: float = 0.0,
        trace: bool = False,
    ) -> None:
        self.now = float(start)
        self.rng = random.Random(seed)
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.tracing = trace
        self.trace: list[TraceEntry] = []
        self.stats: Counter[str] = Counter()
        # Extra drop rules: f(sender_public_src, dst, payload) -> True to drop. Applied after
        # the sender's NATs, so `src` is what the internet sees.
        self.filters: list[Callable[[Endpoint, Endpoint, bytes], bool]] = []
        self.internet = Realm("internet")
        self.ipv6 = Ipv6Net(self)
        self.attachments: list[Attachment] = []
        self._heap: list[tuple] = []
        self._seq = 0

    # -- topology ----------------------------------------------------------------------------
    def _check_free(self, realm: Realm, ip: str) -> None:
        if ip in realm.hosts or ip in realm.nats:
            raise SimError(f"address {ip} already used in {realm.name}")

    def add_host(self, *ips: str, realm: Realm | Nat | None = None, name: str = "") -> Host:
        """A host with `ips` in `realm` (default the internet; a Nat means its inside)."""
        if isinstance(realm, Nat):
            realm = realm.inside
        realm = realm or self.internet
        if not ips:
            raise SimError("add_host: at least one IPv4 address is needed")
        for ip in ips:
            self._check_free(realm, ip)
        host = Host(self, realm, ips, name or ips[0])
        for ip in ips:
            realm.hosts[ip] = host
        return host

    def add_nat(
        self, kind: str, external_ip: str, *, realm: Realm | Nat | None = None, **options: Any
    ) -> Nat:
        """A NAT whose external address `external_ip` lives in `realm` (default the internet)."""
        if isinstance(realm, Nat):
            realm = realm.inside
        realm = realm or self.internet
        self._check_free(realm, external_ip)
        nat = Nat(self, kind, external_ip, realm, **options)
        realm.nats[external_ip] = nat
        return nat

    def add_nat_kind(
        self, name: str, external_ip: str, *, realm: Realm | Nat | None = None, **options: Any
    ) -> Nat:
        """`add_nat` by flavour name: a `NAT_KINDS` kind or a `SYMMETRIC_KINDS` name (so a
        test can be parametrized over one list of strings)."""
        if name in SYMMETRIC_KINDS:
            kind, alloc = SYMMETRIC_KINDS[name]
            options.setdefault("port_alloc", alloc)
            return self.add_nat(kind, external_ip, realm=realm, **options)
        return self.add_nat(name, external_ip, realm=realm, **options)

    def renumber_nat(self, nat: Nat, new_ip: str) -> None:
        """Give the NAT a new external address; its mappings are lost (as with a new DHCP lease)."""
        self._check_free(nat.outside, new_ip)
        del nat.outside.nats[nat.external_ip]
        nat.external_ip = new_ip
        nat.outside.nats[new_ip] = nat
        nat.reset()

    def attach(
        self,
        role: Any,
        host: Host,
        sockets: dict[int, int | Endpoint] | None = None,
        *,
        name: str = "",
        tun: str = "log",
    ) -> Attachment:
        """Bind `role`'s sockets on `host`; a port of 0 picks an ephemeral one.

        `sockets` maps the contract's socket index to a port (on the host's first address) or an
        (ip, port) pair; the default is one ephemeral socket 0. `tun="native"` sends the role's
        `tun_out` to `net.ipv6` (a relay); the default keeps it in `attachment.tun_log`.
        """
        if tun not in ("log", "native"):
            raise SimError(f"attach tun={tun!r}: expected 'log' or 'native'")
        att = Attachment(self, role, host, name or f"{type(role).__name__}@{host.name}", tun)
        for idx, spec in (sockets or {0: 0}).items():
            ip, port = (host.ip, spec) if isinstance(spec, int) else spec
            if ip not in host.ips:
                raise SimError(f"attach: {ip} is not an address of {host}")
            if port == 0:
                port = host.ephemeral_port(ip)
            if (ip, port) in host.sockets:
                raise SimError(f"attach: {ip}:{port} already bound on {host}")
            host.sockets[(ip, port)] = (att, idx)
            att.sockets[idx] = (ip, port)
        self.attachments.append(att)
        self._after(att)
        return att

    def _rebind(self, att: Attachment, idx: int, port: int) -> None:
        """Open (port > 0) or close (0) socket `idx` of `att` on its host's first address,
        as the runtime does for a role's `socket_requests`."""
        old = att.sockets.pop(idx, None)
        if old is not None:
            att.host.sockets.pop(old, None)
        if port:
            ep = (att.host.ip, port)
            if ep in att.host.sockets:
                raise SimError(f"{att.name}: socket {idx} on {ep}, which is already bound")
            att.host.sockets[ep] = (att, idx)
            att.sockets[idx] = ep

    def detach(self, att: Attachment) -> None:
        """Unbind the role (a crashed or stopped daemon): packets to it are then unreachable."""
        for ep in att.sockets.values():
            att.host.sockets.pop(ep, None)
        self.attachments.remove(att)
        att.timer_at = None

    # -- sending -----------------------------------------------------------------------------
    def _delay(self) -> float:
        d = self.latency
        if self.jitter:
            d += self.rng.random() * self.jitter
        return d

    def _push(self, t: float, kind: int, a: Any, b: Any, c: Any, d: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b, c, d))

    def _route(self, src: Endpoint, dst: Endpoint, realm: Realm, data: bytes) -> tuple:
        """Follow `dst` from `realm`; return (attachment, sock, src as seen, reason)."""
        now = self.now
        left: Nat | None = None
        public_src = src if realm is self.internet else None
        for _ in range(64):
            ip = dst[0]
            host = realm.hosts.get(ip)
            if host is not None:
                bound = host.sockets.get(dst)
                if bound is None:
                    return None, 0, src, "port_unreachable"
                return bound[0], bound[1], src, public_src
            nat = realm.nats.get(ip)
            if nat is not None:
                if nat is left and not nat.hairpin:
                    return None, 0, src, "no_hairpin"
                inside = nat.inbound(src, dst[1], now)
                if inside is None:
                    return None, 0, src, "nat_filtered"
                realm, dst = nat.inside, inside
                continue
            if realm.parent is None:
                return None, 0, src, "no_route"
            nat = realm.parent
            src = nat.outbound(src, dst, now)
            realm, left = nat.outside, nat
            if realm is self.internet:
                public_src = src
                for f in self.filters:
                    if f(src, dst, data):
                        return None, 0, src, "filtered"
        return None, 0, src, "routing_loop"

    def _send_udp(self, sender: str, src: Endpoint, realm: Realm, data: bytes, dst: Endpoint):
        if realm is self.internet:
            for f in self.filters:
                if f(src, dst, data):
                    self._note(src, dst, data, "filtered", sender)
                    return
        att, sock, seen_src, extra = self._route(src, dst, realm, data)
        if att is None:
            self._note(seen_src, dst, data, extra, sender)
            return
        if self.loss and self.rng.random() < self.loss:
            self._note(seen_src, dst, data, "lost", sender)
            return
        self._note(seen_src, dst, data, "sent", sender)
        self._push(self.now + self._delay(), _DELIVER, att, bytes(data), seen_src, sock)

    def _note(self, src: Endpoint, dst: Endpoint, data: bytes, fate: str, sender: str) -> None:
        self.stats["udp_" + fate] += 1
        if self.tracing:
            self.trace.append(TraceEntry(self.now, src, dst, bytes(data), fate, sender))

    def inject(self, data: bytes, src: Endpoint, dst: Endpoint) -> None:
        """Send a datagram from the public internet with any (even spoofed) source address."""
        self._send_udp("inject", src, self.internet, data, dst)

    def tun_send(self, att: Attachment, pkt: bytes) -> None:
        """Hand `pkt` to `att.role.receive_tun_packet` now, as the kernel writing to the TUN
        would."""
        self._push(self.now, _TUN, att, bytes(pkt), None, None)

    def call_at(self, t: float, fn: Callable[[float], None]) -> None:
        """Run `fn(now)` at time `t` (e.g. a scripted NAT reset during a long run)."""
        self._push(t, _CALL, fn, None, None, None)

    # -- the engine --------------------------------------------------------------------------
    def _after(self, att: Attachment) -> None:
        """Drain what `att.role` emitted and (re)schedule its timer."""
        role = att.role
        reqs = getattr(role, "socket_requests", None)
        if reqs:  # RFC 6081 §3.3: sockets opened on request, before what is sent on them
            for idx, port in reqs:
                self._rebind(att, idx, port)
            reqs.clear()
        out = role.udp_out
        if out:
            items = out[:]
            out.clear()
            for sock, payload, dst in items:
                src = att.sockets.get(sock)
                if src is None:
                    raise SimError(f"{att.name} sent on socket {sock}, which is not bound")
                self._send_udp(att.name, src, att.host.realm, payload, dst)
        if att._has_raw6 and role.raw6_out:
            items = role.raw6_out[:]
            role.raw6_out.clear()
            for pkt in items:
                self.ipv6.send(pkt)
        if att._has_tun_out and role.tun_out:
            items = role.tun_out[:]
            role.tun_out.clear()
            if att.tun == "native":
                for pkt in items:
                    self.ipv6.send(pkt)
            else:
                att.tun_log.extend((self.now, bytes(p)) for p in items)
        if att._has_events and role.events:
            att.events.extend(role.events)
            role.events.clear()
        if att._has_timer and att in self.attachments:
            t = role.next_timer()
            if t is not None and t != att.timer_at:
                att.timer_at = t
                self._push(max(t, self.now), _TIMER, att, t, None, None)
            elif t is None:
                att.timer_at = None

    def flush(self) -> None:
        """Pick up output of roles poked directly by the test since the last step."""
        for att in self.attachments:
            self._after(att)

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any, d: Any) -> None:
        if kind == _DELIVER:
            att = a
            if att not in self.attachments:
                self.stats["udp_port_unreachable"] += 1
                return
            self.stats["udp_delivered"] += 1
            att.role.receive_datagram(b, c, d, self.now)
            self._after(att)
        elif kind == _TIMER:
            att = a
            if att.timer_at != b or att not in self.attachments:
                return  # superseded
            att.timer_at = None
            att.role.handle_timer(self.now)
            nt = att.role.next_timer()
            if nt is not None and nt <= self.now:
                att._spin += 1
                if att._spin > 1000:
                    raise SimError(f"{att.name}: next_timer() stays at {nt} after handle_timer")
            else:
                att._spin = 0
            self._after(att)
        elif kind == _TUN:
            a.role.receive_tun_packet(b, self.now)
            self._after(a)
        elif kind == _NATIVE:
            self.ipv6._deliver(a)
        else:
            a(self.now)
            self.flush()

    def run_until(self, t: float) -> None:
        """Process every event due at or before `t`, then set the clock to `t`."""
        self.flush()
        heap = self._heap
        while heap and heap[0][0] <= t:
            ev = heapq.heappop(heap)
            if ev[0] > self.now:
                self.now = ev[0]
            self._dispatch(*ev[2:])
        if t > self.now:
            self.now = t

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Step event by event until `pred()` holds (True) or `timeout` seconds pass (False)."""
        self.flush()
        end = self.now + timeout
        heap = self._heap
        while not pred():
            if not heap or heap[0][0] > end:
                self.now = max(self.now, end)
                return pred()
            ev = heapq.heappop(heap)
            if ev[0] > self.now:
                self.now = ev[0]
            self._dispatch(*ev[2:])
        return True

    def pending(self) -> int:
        """Events still on the heap (stale timer entries included)."""
        return len(self._heap)
