"""The Teredo client role: qualification (``Qualifier``, spec §4) + the shared data path
(``TeredoTunnel``, §5) + the direct IPv6 connectivity test (§5.7) + local discovery (§9).

Composition: the qualifier owns the RS/RA exchange and says when the tunnel is up; this class
forwards it the qualification candidates (R1), copies its datagrams and events to the role's
output lists, and reacts to ``InterfaceUp`` (flush the peer table as miredo does, learn the
prefix and address, restart discovery) and ``InterfaceDown``.
"""

from __future__ import annotations

from collections.abc import Callable

from . import entropy
from .addr import (
    ALL_NODES,
    LL_CLIENT,
    TEREDO_PORT,
    TEREDO_PREFIX,
    int_to_ipv4,
    ipv6_text,
    is_global_unicast_ipv4,
    is_link_local6,
    mapped_ipv4_int,
    mapping_of,
    secondary_server_address,
    server_of,
)
from .discovery import DISCOVERY_DEST, DISCOVERY_SOCK, LocalDiscovery
from .errors import ParseError
from .events import InterfaceDown, InterfaceUp
from .icmp_limit import IcmpErrorLimiter
from .peers import (
    CLIENT_GENERATION,
    CLIENT_MEMORY_LIMIT,
    CLIENT_PENDING_LIFETIME,
    DEFAULT_CAPACITY,
    NO_MAPPING,
    SEND,
    Peer,
)
from .pingtest import PingTest
from .qualify import Qualifier
from .rfc6081 import NAT_CONE, NAT_UNKNOWN, ExtensionSet, Rfc6081
from .role import DiscoveryInterface, Endpoint
from .trailers import ND_SOLICITATION, Trailers, parse_trailers, trailer_bytes
from .tunnel import TeredoTunnel
from .wire import (
    UNREACH_ADMIN_PROHIBITED,
    Teredo,
    accept_router_advertisement,
    bubble,
    router_solicitation,
)

#: RFC 6081 NAT probe: RSes to the secondary server address, this far apart, at most this
#: many (the qualification timers of RFC 4380, docs/protocol.md §4.1).
PROBE_DELAY = 4.0
PROBE_TRIES = 3

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from typing import Any

    from engine.config.model import EngineConfig


class ClientRole(TeredoTunnel):
    """A Teredo client qualifying with ``server`` (and ``server2`` as the qualifier's
    fallback).  ``token_bytes``/``randbits`` are injected so tests are deterministic;
    ``ping_ident`` (the ICMPv6 echo identifier of ping tests, miredo's pid) comes from the
    runtime because reading the pid is an OS call."""

    def __init__(
        self,
        *,
        server: str,
        server2: str | None = None,
        token_bytes: Callable[[int], bytes] = entropy.token_bytes,
        randbits: Callable[[int], int] = entropy.randbits,
        local_discovery: bool = False,
        discovery_netmask: str = "255.255.255.255",
        discovery_include_global: bool = False,
        ping_ident: int = 0,
        capacity: int = DEFAULT_CAPACITY,
        generation: int = CLIENT_GENERATION,
        memory_limit: int = CLIENT_MEMORY_LIMIT,
        pending_lifetime: int | None = CLIENT_PENDING_LIFETIME,
        icmp_limiter: IcmpErrorLimiter | None = None,
        extensions: ExtensionSet | None = None,
        now: float = 0.0,
    ) -> None:
        super().__init__(
            prefix=TEREDO_PREFIX,  # replaced by the prefix of the RA on InterfaceUp
            cone=False,  # a miredo client never sets the cone bit: always both bubbles
            token_bytes=token_bytes,
            capacity=capacity,
            generation=generation,
            memory_limit=memory_limit,
            pending_lifetime=pending_lifetime,
            icmp_limiter=icmp_limiter,
            icmp_source=LL_CLIENT,
        )
        # Own output lists for the qualifier (not shared) so that _pump sees its events and can
        # act on InterfaceUp before the runtime does; counters are shared.
        self.q = Qualifier(
            server,
            server2,
            now=now,
            token_bytes=token_bytes,
            randbits=randbits,
            counters=self.counters,
        )
        self.server = self.q.server
        self.server_ep = (self.server, TEREDO_PORT)
        self.up = False
        self.address: bytes | None = None
        self.mtu: int | None = None
        self.mapped: tuple[str, int] | None = None
        self.ping = PingTest(token_bytes(16), ping_ident)
        self.discovery = LocalDiscovery(
            enabled=local_discovery,
            netmask=discovery_netmask,
            include_global=discovery_include_global,
            randbits=randbits,
        )
        self.started = now
        self.last_qualified: float | None = None
        self._last_now = now
        # RFC 6081 (docs/protocol.md §13).  Constructed directly, a client speaks plain
        # RFC 4380; from_config switches on what the directives say (on by default).
        self.ext = Rfc6081(extensions or ExtensionSet.none(), randbits)
        self.socket_requests: list[tuple[int, int]] = []
        """RFC 6081 §3.3: (socket index, port) to open (port 0: close) before `udp_out` is
        sent; the runtime drains it when it said it opens them (`set_local_endpoint`)."""
        self._token_bytes = token_bytes
        self._probe_nonce: bytes | None = None
        self._probe_ep: Endpoint | None = None
        self._probe_at: float | None = None
        self._probe_tries = 0
        self._rx_tr: Trailers | None = None
        self._cur_tr: Trailers | None = None
        self._t8_peer = b""
        self._pump(now)

    @classmethod
    def from_config(cls, cfg: EngineConfig, **kw: Any) -> ClientRole:
        """Build from a client's config (ServerAddress[2], LocalDiscovery, DiscoveryNetmask,
        PeerMemoryLimit); keyword arguments (``token_bytes``, ``ping_ident``, ``now``...)
        pass through."""
        if cfg.server_address is None:
            raise ValueError("client: the config has no ServerAddress")
        if cfg.peer_memory_limit is not None:
            kw.setdefault("memory_limit", cfg.peer_memory_limit)
        kw.setdefault("extensions", ExtensionSet.from_config(cfg))
        return cls(
            server=cfg.server_address,
            server2=cfg.server_address2,
            local_discovery=cfg.discovery_enabled,
            discovery_netmask=cfg.discovery_netmask,
            discovery_include_global=cfg.discovery_includes_global,
            **kw,
        )

    def kick(self, now: float) -> None:
        """Re-qualify at once (the runtime saw the host's IPv4 change)."""
        self.q.kick(now)
        self._pump(now)

    # -- qualifier plumbing ------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Move the qualifier's output to ours and act on its events."""
        q = self.q
        if q.udp_out:
            for item in q.udp_out:
                self._udp(*item)
            q.udp_out.clear()
        if q.events:
            evs = list(q.events)
            q.events.clear()
            for ev in evs:
                if isinstance(ev, InterfaceUp):
                    self._on_up(ev, now)
                elif isinstance(ev, InterfaceDown):
                    self.up = False
                    self.server = self.q.server
                    self.server_ep = (self.server, TEREDO_PORT)
                self.events.append(ev)

    def _on_up(self, ev: InterfaceUp, now: float) -> None:
        addr = bytes(ev.address)
        self.address = addr
        self.mtu = ev.mtu
        self.set_prefix(int.from_bytes(addr[0:4], "big"))
        self.server = server_of(addr)
        self.server_ep = (self.server, TEREDO_PORT)
        self.mapped = mapping_of(addr)
        self.up = True
        self.last_qualified = now
        self.peers.clear()  # miredo: the peer list is flushed on every UP
        self.discovery.start(now)
        if self.ext.qualified(self.mapped):
            self._probe_tries = 0
            self._send_probe(now)

    # -- RFC 6081: the NAT probe (one RS to the secondary server address) -------------------

    def _send_probe(self, now: float) -> None:
        """RFC 4380 §5.2.1's second RS, to the server's secondary address: the mapping it
        sees, next to the primary's, tells a cone, sequential, port-preserving or random
        symmetric NAT apart (RFC 6081 §3.3, §3.4).  Sent only with those extensions on."""
        second = self.q.server2 or secondary_server_address(self.server)
        if second is None or second == self.server or self._probe_tries >= PROBE_TRIES:
            self._probe_at = None
            return
        self._probe_tries += 1
        self._probe_nonce = bytes(self._token_bytes(8))
        self._probe_ep = (second, TEREDO_PORT)
        self._probe_at = now + PROBE_DELAY
        self._udp(0, router_solicitation(self._probe_nonce), self._probe_ep)

    def _probe_answer(self, dgram: Teredo, src: Endpoint) -> bool:
        """The RA to our NAT probe (True: consumed).  Its PIO names the primary address."""
        if self._probe_nonce is None or src != self._probe_ep:
            return False
        try:
            ra = accept_router_advertisement(dgram, self._probe_nonce, self.server)
        except ParseError:
            self._drop("probe_ra_invalid")
            return True
        self._probe_nonce = None
        self._probe_at = None
        if ra.origin is not None:
            self.ext.probed_secondary((ra.origin.ip, ra.origin.port))
        return True

    # -- RFC 6081: host facts and extra sockets ---------------------------------------------

    def set_local_endpoint(self, ip: str, port: int, extra_sockets: bool = False) -> None:
        """The main socket's local address (a host fact): the port-preserving test compares
        the mapped port with it, and hairpinning tells peers behind our NAT where we are.
        `extra_sockets`: the runtime opens the sockets of `socket_requests`, which the
        port-preserving extension (§3.3) needs; without them it stays idle."""
        self.ext.local_port = port or None
        self.ext.extra_sockets = extra_sockets
        if ip and ip != "0.0.0.0":
            self.ext.local_ips = [ip]

    def set_upnp_mapping(self, mapping: tuple[str, int, int] | None, why: str) -> None:
        """§3.2's host fact (docs/protocol.md §13.8): the runtime's IGD mapping of our port.
        While it is advertised, bubbles to peers behind other NATs carry it as their
        Alternate Address, and we start no flow to such a peer from our socket before it has
        reached us: a packet of ours would open the symmetric NAT's own mapping towards it,
        whose conntrack entry then keeps the peer's packets to the IGD's port out."""
        self.ext.set_upnp(mapping, why)

    def _upnp_holds_back(self, peer: bytes, dst: Endpoint) -> bool:
        """True: do not send directly to `dst` (peer `peer`'s mapping) yet, see above.

        Only towards a peer that has shown it speaks RFC 6081 (its trailers), or in the
        first bubble round to a peer not heard from yet: a peer without the extensions never
        bubbles our mapping, and from the second round on it gets RFC 4380's direct bubble
        (§3.1 may still reach it) as it would without UPnP."""
        if self.ext.upnp_endpoint is None or self.mapped is None or dst[0] == self.mapped[0]:
            return False
        p = self.peers.get(peer)
        if p is not None and p.trusted and p.mapping == dst:
            return False
        t = self.peers.tick(self._last_now)
        return self.ext.speaks(peer, t) or p is None or p.bubbles <= 1

    def _remap(self, start: int) -> None:
        """Send traffic for a peer we reached through an extra socket from that socket."""
        out = self.udp_out
        socket_for = self.ext.socket_for
        for i in range(start, len(out)):
            sock, payload, dst = out[i]
            if sock == 0:
                j = socket_for(dst)
                if j:
                    out[i] = (j, payload, dst)

    # -- RFC 6081: hooks of the shared data path --------------------------------------------

    def _t8_bubble(self, dst6: bytes, t: int) -> bytes:
        """T8 with RFC 6081 on: the bubble comes from our Teredo address (RFC 4380 §5.2.6;
        the peer must know who asks, to answer through our server) and carries trailers."""
        x = self.ext
        self._t8_peer = dst6
        if not x.ext.any or not self.up or self.address is None:
            return TeredoTunnel._t8_bubble(self, dst6, t)
        random_port = None
        peer_ip = int_to_ipv4(mapped_ipv4_int(dst6))
        planned = None if x.same_nat(peer_ip) else x.plan_socket(dst6, mapping_of(dst6))
        if planned is not None:
            idx, random_port = planned
            if (idx, random_port) not in self.socket_requests:
                self.socket_requests.append((idx, random_port))
        new_peer = x.is_new(dst6)
        tr = x.bubble_trailers(dst6, peer_ip, t, random_port=random_port)
        if new_peer and planned is None:
            x.opened_mapping()  # the direct bubble opens a new mapping on the main socket
        return bubble(self.address, dst6) + tr.pack()

    def _rx_extension(self, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool,
                      t: int) -> int:
        x = self.ext
        if not x.ext.any:
            return 0
        peer_ip = int_to_ipv4(mapped_ipv4_int(s6))
        how = x.accept(s6, peer_ip, src, t)
        if how or not is_bub:
            return how
        tr = self._cur_tr
        if src[0] == peer_ip:
            if not x.accept_other_port(s6, src, tr, t):
                return 0
            if tr is not None and tr.nonce is not None and not x.is_our_nonce(s6, tr.nonce, t):
                # the peer's own bubble from the port its NAT gave it towards us: answer
                # there, echoing its nonce, so it learns that we took it
                self._udp(0, bubble(self.address or LL_CLIENT, s6) + Trailers(
                    nonce=tr.nonce).pack(), src)
            return 1
        if (tr is not None and tr.nonce is not None
                and x.accept_hairpin_answer(s6, peer_ip, tr.nonce, t)):
            return 2
        return 0

    def _rx_nd(self, pkt: bytes, src: Endpoint, tr: Trailers, t: int) -> None:
        """§3.6: a direct bubble with a Neighbor Discovery Option trailer from a peer we
        trust at `src`: answer a solicitation there (no server involved), remember an
        advertisement (that peer can be refreshed directly)."""
        s6 = pkt[8:24]
        p = self.peers.get(s6)
        if p is None or not p.trusted or p.mapping != src:
            return
        if tr.nd == ND_SOLICITATION and pkt[6] == 59 and pkt[4] == 0 and pkt[5] == 0:
            answer = self.ext.answer_nd(tr)
            if answer.nd is not None:
                self._udp(0, bubble(self.address or LL_CLIENT, s6) + answer.pack(), src)
        self.ext.advertised(s6, tr, t)

    def _t8_refresh(self, p: Peer, b: bytes, t: int) -> bool:
        """§3.6: a trusted peer gone quiet that answered our ND solicitations before gets
        the first bubble of the round directly, at the mapping it was trusted at, and not
        through its server; if that goes unanswered the next round is RFC 4380's pair."""
        if (not p.trusted or p.bubbles != 1 or p.mapping == NO_MAPPING or not self.up
                or not self.ext.direct_refresh(self._t8_peer, t)):
            peer = self._t8_peer
            if self.up and self._upnp_holds_back(peer, mapping_of(peer)):
                self._udp(0, b, (server_of(peer), TEREDO_PORT))  # the indirect one only
                return True
            return False
        self._udp(0, b, p.mapping)
        return True

    def _trailers_of(self, data: bytes, dgram: Teredo) -> Trailers | None:
        """A received datagram's trailers (None: none, extensions off, or malformed)."""
        if not dgram.trailer_len or not self.ext.ext.any:
            return None
        try:
            return parse_trailers(trailer_bytes(data, dgram.trailer_len))
        except ParseError:
            self._drop("trailer_malformed")  # the packet itself goes on as RFC 4380
            return None

    def _rx(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        """The general receive path, with RFC 6081's look at a bubble's trailers first."""
        dgram = self._parse(data)  # R0
        if dgram is None:
            return
        pkt = dgram.ipv6
        tr = self._trailers_of(data, dgram)
        if tr:
            self.ext.heard(pkt[8:24], int(now))
        self._cur_tr = tr
        self._rx_packet(pkt, src, sock, now)
        self._cur_tr = None
        if tr and tr.nd is not None and self.address and pkt[8:12] == self.prefix4:
            self._rx_nd(pkt, src, tr, int(now))
        if (tr and tr.nonce is not None and pkt[6] == 59 and pkt[4] == 0 and pkt[5] == 0
                and self.address and pkt[8:12] == self.prefix4):
            s6 = pkt[8:24]
            p = self.peers.get(s6)
            if (self.ext.confirm(s6, tr.nonce, int(now)) and p is not None and p.trusted
                    and p.mapping == src and self.ext.nat not in (NAT_CONE, NAT_UNKNOWN)):
                # The peer answered our trailers at a port our NAT chose for it; its own
                # NAT lets us in only once we have sent from that port after its bubble:
                # one plain bubble (no nonce, so it is never answered in turn).
                self._udp(0, bubble(self.address, s6), src)

    def receive_tun_packet(self, pkt: bytes, now: float) -> None:
        n = len(self.udp_out)
        TeredoTunnel.receive_tun_packet(self, pkt, now)
        if self.ext.has_sockets:  # (a call may have planned the first one)
            self._remap(n)

    def set_discovery_interfaces(self, ifaces: list[DiscoveryInterface]) -> None:
        """The runtime's list of ``(name, ipv4, netmask)`` to run local discovery on; they
        are also the private addresses hairpinning offers (RFC 6081 §3.5)."""
        self.discovery.set_interfaces(ifaces)
        if ifaces:
            self.ext.local_ips = [ip for _, ip, _ in ifaces]

    def restart_discovery(self, now: float) -> None:
        """A client announces itself on the LAN when it qualifies (miredo: at once, then
        every 200-299 s).  Its first interface list can arrive after that (the parent was
        still importing pyroute2), and that announcement then found no interface; restart the
        round so it goes out now instead of minutes later.  Not qualified: the announcement
        round starts when it qualifies."""
        if self.up:
            self.discovery.start(now)

    # -- hooks of the shared data path -----------------------------------------------------------

    def _tx_open(self) -> bool:
        return self.up

    def _tx_native_dst(self, pkt: bytes, t: int) -> bool:
        # T3: a native destination needs a Teredo source
        if pkt[8:12] != self.prefix4:
            self._drop("tun_src_not_teredo")
            self.icmp_error(pkt, UNREACH_ADMIN_PROHIBITED, t)
            return False
        return True

    def _rx_src_ok(self, teredo_src: bool) -> bool:
        return True  # native sources go on to R10 (ping tests)

    def _rx_new_peer(self, s6: bytes, src: Endpoint, t: int) -> Peer | None:
        # R9 passed: the caller trusts the entry at once, so it is not a pending one
        return self._create(s6, src, t, pending=False)

    def _rx_native(self, pkt: bytes, src: Endpoint, p: Peer | None, t: int) -> None:
        """R10: a native host, or a relay we have not verified yet: queue, and ping-test it."""
        if p is None:
            p = self._create(pkt[8:24], NO_MAPPING, t)
            if p is None:
                return
        self._queue(p, pkt, src)
        p.last_rx = t
        if p.may_send_ping(t) == SEND:
            self._send_ping(pkt[8:24], t)

    def _tx_src_ok(self, pkt: bytes) -> bool:
        # T3: a native destination needs a Teredo source (checked on the fast path too)
        p4 = self.prefix4
        return pkt[24:28] == p4 or pkt[8:12] == p4

    def _icmp_src(self) -> bytes:
        return self.address if self.address is not None else LL_CLIENT

    def _send_ping(self, dst6: bytes, t: int) -> None:
        """Echo request to the native host, through OUR server (from our own address)."""
        addr = self.address
        if addr is None:
            return
        self._udp(0, self.ping.request(addr, dst6, t), (server_of(addr), TEREDO_PORT))

    def _ping_check(self, pkt: bytes, t: int) -> bool:
        return self.address is not None and self.ping.verify(pkt, self.address, t)

    def _looks_local(self, s6: bytes, src: Endpoint) -> bool:
        if self.mapped is None:
            return False
        return self.discovery.looks_local(s6, src, self.prefix4, self.mapped[0])

    def _local_bubbles(self, p: Peer, dst6: bytes) -> None:
        """T7: a Teredo-sourced direct bubble to the local mapping (no global check) and one
        discovery round."""
        addr = self.address
        if addr is None:
            return
        self._udp(0, bubble(addr, dst6), p.mapping)
        self._announce()

    def _announce(self) -> None:
        if self.address is not None and self.discovery.active:
            self._udp(DISCOVERY_SOCK, bubble(self.address, ALL_NODES), DISCOVERY_DEST)

    def _rx_discovery(self, pkt: bytes, src: Endpoint, p: Peer | None, sock: int,
                      t: int) -> bool:
        """R5: a local discovery bubble from a peer that passes the locality checks."""
        if not LocalDiscovery.is_discovery_bubble(pkt, sock):
            return False
        s6 = pkt[8:24]
        if s6 == self.address or not self._looks_local(s6, src):
            self._drop("discovery_not_local")
            return True
        if p is None:
            p = self._create(s6, src, t, pending=False)  # local: never evicted
            if p is None:
                return True
        if not self._set_mapping(p, src):
            return True
        if not p.local:
            p.bubbles = 0
        p.local = True
        p.last_rx = t
        if p.may_send_bubble(t) == SEND and self.address is not None:
            self._udp(0, bubble(self.address, s6), src)
        return True

    # -- role API ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        n = len(self.udp_out)
        self._receive_datagram(data, src, sock, now)
        if self.ext.has_sockets:  # (a call may have planned the first one)
            self._remap(n)

    def _receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        if src[1] != TEREDO_PORT and sock != DISCOVERY_SOCK and self.up:
            # neither qualification (R1) nor our server (R3): the shared path, fast for R7
            TeredoTunnel.receive_datagram(self, data, src, sock, now)
            return
        c = self.counters
        c.udp_in_packets += 1
        c.udp_in_bytes += len(data)
        dgram = self._parse(data)  # R0
        if dgram is None:
            return
        if Qualifier.is_candidate(dgram, src):  # R1 (the qualifier checks the source IPv4)
            if self._probe_answer(dgram, src):
                return
            self.q.handle_ra(dgram, src, now)
            self._pump(now)
            return
        if not self.up:  # R2
            self._drop("rx_not_qualified")
            return
        pkt = dgram.ipv6
        self._rx_tr = self._trailers_of(data, dgram) if src == self.server_ep else None
        if src == self.server_ep and self._from_server(dgram, pkt):  # R3
            return
        self._rx_packet(pkt, src, sock, now)

    def _from_server(self, dgram: Teredo, pkt: bytes) -> bool:
        """R3; returns True when the packet was consumed."""
        is_bub = pkt[6] == 59 and pkt[4] == 0 and pkt[5] == 0
        s6 = pkt[8:24]
        origin = tuple(dgram.origin) if dgram.origin is not None else None
        if origin is None and is_bub and s6[0:4] == self.prefix4:
            origin = mapping_of(s6)  # some servers omit the origin indication
        if origin is not None and origin != NO_MAPPING:
            if origin[1] == 0:
                self._drop("mapped_port_zero")  # the kernel would refuse to send there
            elif is_global_unicast_ipv4(origin[0]):
                tr = self._rx_tr
                if tr and is_bub:
                    self._answer_trailers(pkt, s6, origin, tr)
                else:
                    self._udp(0, bubble(pkt[24:40], s6), origin)
            else:
                self._drop("bubble_dst_not_global")
            if is_bub:
                return True
        if is_bub:
            self._drop("server_bubble_without_origin")
            return True
        # miredo means to drop link-local sources here (its test never matches, §12.2 #5)
        if is_link_local6(s6):
            self._drop("rx_link_local_src")
            return True
        return False

    def _answer_trailers(self, pkt: bytes, s6: bytes, origin: Endpoint, tr: Trailers) -> None:
        """An indirect bubble from a peer that speaks RFC 6081: the RFC 4380 answer to its
        origin, then bubbles to the endpoints its trailers name (predicted ports, private
        addresses behind our NAT), each echoing its nonce so it can tell them from noise."""
        echo = self.ext.answer_nd(tr).pack()
        b = bubble(pkt[24:40], s6) + echo
        if not self._upnp_holds_back(s6, origin):
            self._udp(0, b, origin)
        t = self.peers.tick(self._last_now)
        for ep, _why in self.ext.on_indirect(origin, tr, t):
            self._udp(0, b, ep)
        if s6[0:4] == self.prefix4 and self.ext.nat not in (NAT_CONE, NAT_UNKNOWN):
            self._bubble_back(s6, t)

    def _bubble_back(self, s6: bytes, t: int) -> None:
        """Our NAT is symmetric and a peer speaking RFC 6081 asked for us: our answer to its
        origin leaves from a port its NAT will not admit, so bubble it as if we had asked
        (T8): a direct bubble that opens our NAT's mapping towards it, and an indirect one
        whose trailers tell it which port that mapping has (§3.3, §3.4) or who we are
        (§3.1).  The peer's bubble limiter bounds how often."""
        p = self.peers.get(s6)
        if p is None:
            p = self._create(s6, mapping_of(s6), t)
            if p is None:
                return
        elif p.trusted and p.valid(t):
            return
        if p.may_send_bubble(t) != SEND:
            return
        b = self._t8_bubble(s6, t)
        direct = mapping_of(s6)
        if is_global_unicast_ipv4(direct[0]) and not self._upnp_holds_back(s6, direct):
            self._udp(0, b, direct)
        self._udp(0, b, (server_of(s6), TEREDO_PORT))

    def handle_timer(self, now: float) -> None:
        n = len(self.udp_out)
        self._handle_timer(now)
        if self.ext.has_sockets:  # (a call may have planned the first one)
            self._remap(n)

    def _handle_timer(self, now: float) -> None:
        self._last_now = now
        if self._probe_at is not None and self._probe_at <= now:
            self._send_probe(now)
        q = self.q
        nt = q.next_timer()
        if nt is not None and nt <= now:
            q.handle_timer(now)
        self._pump(now)
        if self.discovery.due(now):
            self._announce()
        self.peers.gc_step(now)

    def next_timer(self) -> float | None:
        times = [self.q.next_timer(), self.discovery.next_timer(), TeredoTunnel.next_timer(self),
                 self._probe_at]
        due = [when for when in times if when is not None]
        return min(due) if due else None

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = dict(self.q.status())
        st.update(
            {
                "role": "client",
                "state": st.get("state", "qualified" if self.up else "qualifying"),
                "address": ipv6_text(self.address) if self.address and self.up else None,
                "mtu": self.mtu if self.up else None,
                "mapped": (
                    {"ip": self.mapped[0], "port": self.mapped[1]}
                    if self.mapped and self.up else None
                ),
                "last_qualified": self.last_qualified,
                "peers": self.peer_counts(),
                "peer_memory": self.peer_memory(),
                "discovery": {
                    "enabled": self.discovery.enabled,
                    "interfaces": [n for n, _, _ in self.discovery.interfaces],
                },
                "icmp_errors_sent": self.icmp_sent,
                "rfc6081": self.ext.status(),
                "counters": self.counters.as_dict(),
            }
        )
        return st

    def list_peers(self, now: float, limit: int) -> dict[str, Any]:
        """The shared listing, plus which RFC 6081 extensions each peer's path rests on."""
        out = TeredoTunnel.list_peers(self, now, limit)
        if self.ext.ext.any:
            for row in out["peers"]:
                key = _addr_bytes(row["address"])
                p = self.peers.get(key)
                row["extensions"] = self.ext.peer_extensions(key) if p is not None else []
        return out


def _addr_bytes(text: str) -> bytes:
    """The 16 bytes of an IPv6 address in the listing (the peer table's key)."""
    from socket import AF_INET6, inet_pton

    return inet_pton(AF_INET6, text)
