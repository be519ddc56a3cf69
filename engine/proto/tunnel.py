"""The Teredo data path shared by the client and the relay (spec §5.5, §5.6, §5.8, §5.9).

``TeredoTunnel`` implements the transmit path T0–T8 (a packet read from the TUN device) and the
receive path R0/R4–R11 (a datagram from the UDP socket) once; where the client and the relay
differ, the path calls a hook method that each subclass overrides (the client, `client.py`,
adds qualification, the ping test and local discovery through them; the relay, `relay.py`,
refuses what a relay must not forward).  There is no role flag: a rule that differs is a
hook.

The hot path
------------
A relay forwards every packet of every Teredo client it serves through :meth:`_tx_fast` /
:meth:`_rx_fast`.  For a trusted peer they do the minimum: one dict lookup, a mapping compare, a
list append and plain int counter increments -- no parsing objects, no logging, no exceptions.
Anything unusual (headers, unknown or untrusted peers, queued packets, bubbles) falls through to
the general path, which implements the spec rule by rule.  The fast paths only take packets
for which the general path would do exactly the same thing; the sim tests run both.

Drop reasons (``counters.drops`` keys)
--------------------------------------
TX: ``tun_runt`` (T0), ``tun_dst_multicast`` (T1), ``tun_not_qualified`` (T2),
``tun_src_not_teredo`` (T3 client), ``tun_dst_not_teredo`` (T3 relay),
``tun_dst_server_not_global`` (T3), ``mapped_port_zero`` (T3: the destination's embedded port
is 0), ``peer_table_full`` (T4: the count cap), ``peer_budget_full`` (T4, or queueing: the
table's byte budget is full of entries that may not be evicted), ``queue_full`` (the
peer's 1280-byte queue budget),
``bubble_limit`` / ``ping_limit`` (a limiter said NEVER).
RX: ``udp_runt``, ``parse_error``, ``mapped_port_zero`` (UDP source port 0: no answer could
ever reach it), ``rx_src_not_teredo`` (R3'), ``rx_dst_multicast`` (R6),
``rx_unknown_peer`` (R9: relay, peer never verified, and a bubble or a packet the relay
would not verify), ``rx_mapping_mismatch`` (R9 failed),
``rx_native_src`` (R11, relay), ``queued_from_other_mapping`` (flush of incoming entries).
"""

from __future__ import annotations

try:  # hashlib's own blake2s; `hashlib` itself would also load OpenSSL (docs/performance.md)
    from _blake2 import blake2s
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2s
from collections.abc import Callable

from .addr import (
    LL_CLIENT,
    LL_PREFIX,
    TEREDO_PORT,
    is_global_unicast_ipv4,
    is_global_unicast_ipv4_int,
    mapping_of,
    server_of,
)
from .counters import Counters
from .errors import ParseError
from .icmp_limit import IcmpErrorLimiter
from .peers import (
    LATER,
    NO_MAPPING,
    SEND,
    VALID_SECONDS,
    Peer,
    PeerTable,
)
from .role import Endpoint, RoleBase, UdpDatagram
from .wire import (
    UNREACH_ADDRESS,
    bubble,
    dest_unreachable,
    icmp_error_allowed,
    parse_datagram,
)

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any

_FE80 = LL_PREFIX  # fe80::/64, the prefix of hole-punching bubble sources


class TeredoTunnel(RoleBase):
    """Shared TX/RX path; subclasses override the hooks where client and relay differ.

    ``prefix`` is the 32-bit Teredo prefix (relay: configured; client: learned from the RA);
    ``cone`` says whether our own flags carry the cone bit (a cone relay sends no direct bubble).
    """

    def __init__(
        self,
        *,
        prefix: int,
        cone: bool,
        token_bytes: Callable[[int], bytes],
        capacity: int,
        generation: int,
        memory_limit: int,
        pending_lifetime: int | None = None,
        icmp_limiter: IcmpErrorLimiter | None = None,
        icmp_source: bytes = LL_CLIENT,
    ) -> None:
        self.cone = cone
        self.set_prefix(prefix)
        self.peers = PeerTable(capacity=capacity, generation=generation,
                               memory_limit=memory_limit, pending_lifetime=pending_lifetime)
        self.udp_out: list[UdpDatagram] = []
        self.tun_out: list[bytes] = []
        self.raw6_out: list[bytes] = []  # stays empty: only a server writes raw IPv6
        self.events: list[object] = []
        self.counters = Counters()
        self.icmp = icmp_limiter if icmp_limiter is not None else IcmpErrorLimiter()
        self.icmp_source = icmp_source
        self.icmp_sent = 0
        self._key = bytes(token_bytes(16))
        if len(self._key) != 16:
            raise ValueError("tunnel: token_bytes(16) must return 16 bytes")
        self._last_now = 0.0

    def set_prefix(self, prefix: int) -> None:
        if not 0 <= prefix <= 0xFFFFFFFF or prefix >> 24 == 0xFF:
            raise ValueError(f"tunnel: Teredo prefix {prefix:#x} is not a unicast 32-bit prefix")
        self.prefix = prefix
        self.prefix4 = prefix.to_bytes(4, "big")

    # -- hooks: where the client and the relay differ ---------------------------------------
    # The defaults are the relay's behaviour where it has one and "not applicable" elsewhere;
    # the client overrides what qualification, ping tests and local discovery add.

    def _tx_open(self) -> bool:
        """T2: whether the tunnel may transmit at all (the client must be qualified)."""
        return True

    def _tx_native_dst(self, pkt: bytes, t: int) -> bool:
        """T3 for a destination outside the Teredo prefix: True to go on to T4/T6 (a client
        reaches native hosts through ping tests); a relay refuses, as here."""
        self._drop("tun_dst_not_teredo")
        self.icmp_error(pkt, UNREACH_ADDRESS, t)
        return False

    def _rx_src_ok(self, teredo_src: bool) -> bool:
        """R3': a relay takes only Teredo sources (the client checks natives at R10)."""
        if not teredo_src:
            self._drop("rx_src_not_teredo")
        return teredo_src

    def _rx_discovery(self, pkt: bytes, src: Endpoint, p: Peer | None, sock: int,
                      t: int) -> bool:
        """R5: consume a local discovery bubble; True when consumed (a relay runs none)."""
        return False

    def _ping_check(self, pkt: bytes, t: int) -> bool:
        """R8: whether ``pkt`` answers one of our ping tests (a relay sends none)."""
        return False

    def _looks_local(self, s6: bytes, src: Endpoint) -> bool:
        """R9c (§9): whether an unknown Teredo source is a peer on our LAN (relay: never)."""
        return False

    def _rx_new_peer(self, s6: bytes, src: Endpoint, t: int) -> Peer | None:
        """R9 for a source with no entry: a relay trusts only peers it has verified (T8, or
        :meth:`_rx_verify`), so it drops the packet; the client creates the entry."""
        self._drop("rx_unknown_peer")
        return None

    def _rx_verify(self, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool, t: int) -> bool:
        """R9 for an unknown source whose mapping matched: True when the role took the packet
        to verify the source first (a restarted relay, issue 9 flaw 9); the default lets
        :meth:`_rx_new_peer` decide, as miredo does."""
        return False

    def _rx_unverified(self, p: Peer, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool,
                       t: int) -> bool:
        """R9 for an entry :meth:`_rx_verify` made (mapping still ``NO_MAPPING``): True when
        the packet was taken (queued until the source is proven); False only for the proof,
        which the path then trusts like any answer to a bubble (a client keeps this default)."""
        return False

    def _rx_native(self, pkt: bytes, src: Endpoint, p: Peer | None, t: int) -> None:
        """R10/R11: a packet from outside the Teredo prefix that R7/R8 did not take.  A relay
        never gets here (R3' dropped it); R11 is its rule should R3' ever change."""
        self._drop("rx_native_src")

    def _send_ping(self, dst6: bytes, t: int) -> None:
        """T6/R10: send a ping test towards the native host ``dst6`` (a relay sends none)."""

    def _rx_extension(self, pkt: bytes, s6: bytes, src: Endpoint, is_bub: bool,
                      t: int) -> int:
        """R9(e), RFC 6081: a Teredo source at an endpoint other than its address's mapping
        that the client's extensions vouch for: 0 no, 1 yes, 2 yes and a local peer (the
        relay speaks no extension)."""
        return 0

    def _t8_refresh(self, p: Peer, b: bytes, t: int) -> bool:
        """T8 for a peer whose bubble ``b`` the role sends itself: True skips RFC 4380's
        direct and indirect pair (RFC 6081 server load reduction: a client refreshes a
        stale peer that supports it with a direct bubble only; the relay never does)."""
        return False

    def _t8_bubble(self, dst6: bytes, t: int) -> bytes:
        """T8: the bubble (direct and indirect) for ``dst6``: from our keyed fe80 token
        (§5.8), as miredo sends it; a client with RFC 6081 extensions on sends its own
        address and trailers instead."""
        return bubble(self.token_source(dst6), dst6)

    def _local_bubbles(self, p: Peer, dst6: bytes) -> None:
        """T7: the direct bubble to a local peer and a discovery round (only a client has
        local peers)."""

    # -- the bubble token (§5.8) -----------------------------------------------------------------

    def token_source(self, teredo6: bytes) -> bytes:
        """``fe80::`` + keyed hash of the mapping embedded in ``teredo6`` (its bytes 10-15,
        still obfuscated: the hash only needs a stable input), U/G bits cleared."""
        h = blake2s(bytes(teredo6[10:16]), key=self._key, digest_size=8, person=b"tbub")
        d = h.digest()
        return _FE80 + bytes((d[0] & 0xFC,)) + d[1:]

    # -- output helpers --------------------------------------------------------------------------

    def _udp(self, sock: int, payload: bytes, dst: Endpoint) -> None:
        self.udp_out.append((sock, payload, dst))
        c = self.counters
        c.udp_out_packets += 1
        c.udp_out_bytes += len(payload)

    def _deliver(self, pkt: bytes) -> None:
        self.tun_out.append(pkt)
        c = self.counters
        c.tun_out_packets += 1
        c.tun_out_bytes += len(pkt)

    def _drop(self, reason: str) -> None:
        self.counters.drops[reason] += 1

    def icmp_error(self, pkt: bytes, code: int, t: int) -> None:
        """Destination Unreachable for ``pkt`` (§5.9), written to the TUN device."""
        if not icmp_error_allowed(pkt):
            return
        if not self.icmp.allow(t):
            self._drop("icmp_rate_limited")
            return
        self.icmp_sent += 1
        self._deliver(dest_unreachable(self._icmp_src(), bytes(pkt[8:24]), code, pkt))

    def _icmp_src(self) -> bytes:
        return self.icmp_source

    # -- transmit path (§5.5) ------------------------------------------------------------------

    def receive_tun_packet(self, pkt: bytes, now: float) -> None:
        """A packet read from the TUN device."""
        c = self.counters
        n = len(pkt)
        c.tun_in_packets += 1
        c.tun_in_bytes += n
        if n >= 40:
            p = self.peers.recent.get(pkt[24:40])
            if p is not None and p.trusted and self._tx_open():
                peers = self.peers
                if peers.second_start <= now < peers.second_end:  # tick(now), inlined
                    t = peers.second
                else:
                    t = peers.tick(now)
                if t - p.last_rx <= VALID_SECONDS and not p.local and self._tx_src_ok(pkt):
                    # T5 for a trusted, valid peer: the hot path
                    p.last_tx = t
                    self.udp_out.append((0, pkt, p.mapping))
                    c.udp_out_packets += 1
                    c.udp_out_bytes += n
                    return
        self._tx(pkt, now)

    def _tx_src_ok(self, pkt: bytes) -> bool:
        """T3 for a packet to a known peer: relays accept any source; the client checks in its
        own override (a native destination needs a Teredo source)."""
        return True

    def _tx(self, pkt: bytes, now: float) -> None:
        """The general transmit path, rule by rule."""
        self._last_now = now
        peers = self.peers
        t = peers.tick(now)
        if len(pkt) < 40:  # T0
            self._drop("tun_runt")
            return
        dst6 = pkt[24:40]
        if dst6[0] == 0xFF:  # T1
            self._drop("tun_dst_multicast")
            return
        if not self._tx_open():  # T2
            self._drop("tun_not_qualified")
            self.icmp_error(pkt, UNREACH_ADDRESS, t)
            return
        teredo_dst = dst6[0:4] == self.prefix4
        if not teredo_dst:  # T3
            if not self._tx_native_dst(pkt, t):
                return
        else:
            # the server IPv4 in bytes 4-7, checked as an int (0.0.0.0 is not global either)
            if not is_global_unicast_ipv4_int(int.from_bytes(dst6[4:8], "big")):
                self._drop("tun_dst_server_not_global")
                return
            # The embedded port, obfuscated (0xFFFF is port 0).  No NAT maps port 0 and the
            # kernel refuses to send there, so neither a peer entry nor a bubble can help:
            # drop here, where it is counted under its own reason, not as a send error.
            if dst6[10] == 0xFF and dst6[11] == 0xFF:
                self._drop("mapped_port_zero")
                return
        p = peers.get(dst6)  # T4
        if p is None:
            # a Teredo destination's mapping is the one its address carries: stored as None
            p = self._create(dst6, None if teredo_dst else NO_MAPPING, t)
            if p is None:
                return
        elif p.trusted and p.valid(t):  # T5
            p.last_tx = t
            self._udp(0, pkt, p.mapping)
            return
        if not teredo_dst:  # T6 (a relay returned at T3)
            self._queue(p, pkt, None)
            r = p.may_send_ping(t)
            if r == SEND:
                self._send_ping(dst6, t)
            elif r != LATER:
                self._drop("ping_limit")
                self.icmp_error(pkt, UNREACH_ADDRESS, t)
            return
        if p.local and p.valid(t):  # T7 (only a client's discovery makes local peers)
            self._queue(p, pkt, None)
            r = p.may_send_bubble(t)
            if r == SEND:
                self._local_bubbles(p, dst6)
            elif r != LATER:
                self._drop("bubble_limit")
                self.icmp_error(pkt, UNREACH_ADDRESS, t)
            return
        # T8: untrusted, or trusted but stale
        self._queue(p, pkt, None)
        r = p.may_send_bubble(t)
        if r == SEND:
            b = self._t8_bubble(dst6, t)
            if self._t8_refresh(p, b, t):
                return
            if not self.cone:
                direct = mapping_of(dst6)
                if is_global_unicast_ipv4(direct[0]):
                    self._udp(0, b, direct)
                else:
                    self._drop("bubble_dst_not_global")
            self._udp(0, b, (server_of(dst6), TEREDO_PORT))
        elif r != LATER:
            self._drop("bubble_limit")
            self.icmp_error(pkt, UNREACH_ADDRESS, t)

    def _create(self, key: bytes, mapping: Endpoint | None, t: int, *,
                pending: bool = True) -> Peer | None:
        """A new peer entry, or None (counted under the table's reason) when it is full;
        ``mapping=None`` is the one ``key`` carries."""
        p = self.peers.create(key, mapping, t, pending=pending)
        if p is None:
            self._drop(self.peers.full_reason)
        return p

    def _set_mapping(self, p: Peer, src: Endpoint) -> bool:
        """Set the mapping of ``p`` within the byte budget; False (a drop) when refused."""
        if self.peers.remap(p, src):
            return True
        self._drop(self.peers.full_reason)
        return False

    def _queue(self, p: Peer, pkt: bytes, src: Endpoint | None) -> None:
        reason = self.peers.enqueue(p, pkt, src)
        if reason is not None:
            self._drop(reason)

    def _flush(self, p: Peer, t: int) -> None:
        """The peer became reachable: send/deliver what waited for it, in arrival order."""
        q = self.peers.take_queue(p, t)
        if q is None:
            return
        mapping = p.mapping
        for pkt, src in q:
            if src is None:
                p.last_tx = t
                self._udp(0, pkt, mapping)
            elif src == mapping:
                self._deliver(pkt)
            else:
                self._drop("queued_from_other_mapping")

    # -- receive path (§5.6) ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        """A datagram from the UDP socket (relay entry point; the client wraps it)."""
        c = self.counters
        n = len(data)
        c.udp_in_packets += 1
        c.udp_in_bytes += n
        # Fast path: a header-less IPv6 packet from a trusted peer's mapping with nothing queued.
        if n >= 40 and data[0] >> 4 == 6 and data[24] != 0xFF:
            total = 40 + (data[4] << 8 | data[5])
            if total <= n and (total > 40 or data[6] != 59):
                p = self.peers.recent.get(data[8:24])
                if p is not None and p.trusted and p.mapping == src and p.queue is None:
                    # R7: predecap + deliver
                    peers = self.peers
                    if peers.second_start <= now < peers.second_end:  # tick(now), inlined
                        t = peers.second
                    else:
                        t = peers.tick(now)
                    p.last_rx = t
                    if p.bubbles:
                        p.bubbles = 0
                    if p.pings:
                        p.pings = 0
                    if total != n:
                        data = data[:total]
                    self.tun_out.append(data)
                    c.tun_out_packets += 1
                    c.tun_out_bytes += total
                    return
        self._rx(data, src, sock, now)

    def _parse(self, data: bytes):
        if len(data) < 2:
            self._drop("udp_runt")
            return None
        try:
            return parse_datagram(data)
        except ParseError:
            self._drop("parse_error")
            return None

    def _rx(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        """The general receive path for the relay: R0, R3', R4, R6, R7, R9, R11."""
        dgram = self._parse(data)  # R0
        if dgram is None:
            return
        self._rx_packet(dgram.ipv6, src, sock, now)

    def _rx_packet(self, pkt: bytes, src: Endpoint, sock: int, now: float) -> None:
        """R3' .. R11 on the IPv6 packet (exactly 40+plen bytes) of a parsed datagram."""
        self._last_now = now
        if src[1] == 0:
            # A peer's mapping is the UDP source; with port 0 nothing sent back could leave
            # (the kernel refuses port 0), so the source can become neither peer nor mapping.
            self._drop("mapped_port_zero")
            return
        peers = self.peers
        t = peers.tick(now)
        s6 = pkt[8:24]
        teredo_src = s6[0:4] == self.prefix4
        if not self._rx_src_ok(teredo_src):  # R3'
            return
        p = peers.get(s6)  # R4
        if self._rx_discovery(pkt, src, p, sock, t):  # R5
            return
        if pkt[24] == 0xFF:  # R6
            self._drop("rx_dst_multicast")
            return
        is_bub = pkt[6] == 59 and pkt[4] == 0 and pkt[5] == 0
        if p is not None and p.trusted and p.mapping == src:  # R7
            self._flush(p, t)
            if not is_bub:
                self._deliver(pkt)
            return
        if p is not None and self._ping_check(pkt, t):  # R8
            if not self._set_mapping(p, src):
                return
            p.trusted = True
            self._flush(p, t)
            return
        if teredo_src:  # R9
            if p is not None and p.mapping == NO_MAPPING and self._rx_unverified(
                    p, pkt, s6, src, is_bub, t):
                return
            local = False
            ok = mapping_of(s6) == src  # (a)
            if not ok:  # (b) and (c): only a client has local peers
                if p is not None:
                    ok = p.local and p.mapping == src  # (b)
                else:
                    ok = local = self._looks_local(s6, src)  # (c)
            if not ok:  # (e) RFC 6081: an endpoint a peer's trailers sent us to (client)
                how = self._rx_extension(pkt, s6, src, is_bub, t)
                ok, local = how > 0, how == 2
            if not ok and is_bub:  # (d)
                d6 = pkt[24:40]
                ok = d6[0:8] == _FE80 and d6 == self.token_source(s6)
            if not ok:
                self._drop("rx_mapping_mismatch")
                return
            if p is None:
                if self._rx_verify(pkt, s6, src, is_bub, t):
                    return
                p = self._rx_new_peer(s6, src, t)
                if p is None:
                    return
            if not self._set_mapping(p, src):
                return
            if local:
                p.local = True
            p.trusted = True
            self._flush(p, t)
            if not is_bub:
                self._deliver(pkt)
            return
        self._rx_native(pkt, src, p, t)  # R10 (client) / R11 (relay)

    # -- timers ----------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        self.peers.gc_step(now)

    def next_timer(self) -> float | None:
        """The peer table's GC: at the next generation swap, or every 10 ms while a released
        generation is still being freed in slices (so I/O interleaves with the freeing)."""
        t = self.peers.next_gc()
        if t == 0.0:
            return self._last_now + 0.01
        return t

    def peer_counts(self) -> dict[str, int]:
        return self.peers.counts()

    def peer_memory(self) -> dict[str, int]:
        """The status JSON's ``peer_memory`` object: the peer table's byte budget and its use."""
        return self.peers.memory()

    def list_peers(self, now: float, limit: int) -> dict[str, Any]:
        rows = self.peers.listing(now, limit)
        counts = self.peers.counts()
        return {**counts, "truncated": counts["count"] > len(rows), "peers": rows}
