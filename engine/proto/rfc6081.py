"""RFC 6081 ("Teredo Extensions") for the client: what the extensions know and decide.

Why a module of its own: the extensions are opt-in behaviour layered on the RFC 4380 data
path, and a client with all of them off must put exactly today's bytes on the wire.  Keeping
their state and rules here (the client calls in at a few points, `client.py`) means the
shared data path (`tunnel.py`) only gains one hook, and the relay none.

Negotiation (docs/protocol.md §13.3): a client that has an extension on adds RFC 6081
trailers (`engine.proto.trailers`) to the bubbles it sends to Teredo peers.  An RFC 4380 peer
(miredo, or ours with the extensions off) ignores bytes after the IPv6 packet, so it sees
plain bubbles.  Everything else an extension does -- bubbles to predicted ports, to a peer's
private addresses, accepting a peer at an endpoint other than the one in its address -- is
done only in answer to a peer's trailers, so it never happens with a peer that sent none.

State is small and bounded: a few dicts keyed by endpoint or peer address, each capped
(`MAX_RECORDS`) and expired after `RECORD_SECONDS`, so a flood of indirect bubbles cannot grow
the client's memory (docs/security.md: the peer table has a byte budget; these records are
outside it and bounded by count instead).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from .records import dataclass
from .trailers import ND_ADVERTISEMENT, ND_SOLICITATION, Trailers, usable_alternate

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from typing import Any

    from engine.config.model import EngineConfig

Endpoint = tuple[str, int]

#: The extension names: `EngineConfig` fields, status JSON words, docs/protocol.md §13.
SYMMETRIC = "symmetric_nat_support"
PORT_PRESERVING = "port_preserving_nat"
SEQUENTIAL = "sequential_port_nat"
HAIRPINNING = "hairpinning"
SERVER_LOAD_REDUCTION = "server_load_reduction"
UPNP = "upnp_symmetric_nat"
NAMES = (SYMMETRIC, PORT_PRESERVING, SEQUENTIAL, HAIRPINNING, SERVER_LOAD_REDUCTION, UPNP)
#: What the answering side of §3.3/§3.4 reports: it cannot tell which NAT the peer is behind,
#: only that it sent bubbles to the port the peer's Random Port trailer predicted.
PORT_PREDICTION = "port_prediction"

#: How long a record (a nonce seen, an endpoint probed, a trailer sent) is honoured: the
#: peer validity of RFC 4380 (30 s), which is also how long a NAT keeps an idle UDP mapping
#: open at the least.
RECORD_SECONDS = 30
#: At most this many records of each kind; the oldest goes first.
MAX_RECORDS = 256
#: Ports probed from a Random Port trailer: the predicted one and the next ones, for a
#: sequential NAT that other hosts also allocate from (engine choice, docs §13.4).
PROBE_WINDOW = 4
#: At most this many alternate addresses probed from one trailer: the most the published
#: layout carries (docs/protocol.md §13.1).
MAX_ALTERNATES = 4
#: At most this many sent: the published layout asks senders for at most 2 (a local address
#: and a UPnP mapping), docs/protocol.md §13.1; a trailer of ours carries either the local
#: ones (to a peer behind our NAT) or the UPnP mapping (to any other, §13.8).
MAX_ALTERNATES_SENT = 2
#: Two mappings whose ports differ by at most this much (and at least 1) mean a NAT that
#: allocates ports sequentially (engine choice, docs §13.4).
SEQUENTIAL_MAX_DELTA = 16
#: How long a peer that answered an ND Option solicitation is trusted to answer the next
#: (RFC 4380's peer entry lifetime for a client, 600 s).
SLR_SECONDS = 600
#: Extra sockets a client keeps open for the port-preserving extension (one per peer).
MAX_EXTRA_SOCKETS = 8
FIRST_EXTRA_SOCKET = 3  # 0 main, 1 (server only), 2 discovery

# NAT classes (`Rfc6081.nat`), from the mappings seen by the primary and secondary server
NAT_UNKNOWN = "unknown"
NAT_CONE = "cone"  # the same mapping for both: RFC 4380 needs no help
NAT_SEQUENTIAL = "sequential"
NAT_PRESERVING = "port_preserving"
NAT_SYMMETRIC = "symmetric"  # random ports: nothing to predict


@dataclass(frozen=True, slots=True)
class ExtensionSet:
    """Which extensions are switched on (the six directives)."""

    symmetric_nat_support: bool = True
    port_preserving_nat: bool = True
    sequential_port_nat: bool = True
    hairpinning: bool = True
    server_load_reduction: bool = True
    upnp_symmetric_nat: bool = True

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> ExtensionSet:
        return cls(**{n: getattr(cfg, n) is not False for n in NAMES})

    @classmethod
    def none(cls) -> ExtensionSet:
        return cls(**dict.fromkeys(NAMES, False))

    @property
    def any(self) -> bool:
        return any(getattr(self, n) for n in NAMES)

    @property
    def needs_nat_probe(self) -> bool:
        """Port prediction needs to know the NAT's class (one RS to the secondary address)."""
        return self.port_preserving_nat or self.sequential_port_nat

    def names(self) -> list[str]:
        return [n for n in NAMES if getattr(self, n)]


def classify(primary: Endpoint, secondary: Endpoint, local_port: int | None) -> str:
    """The NAT class from the mappings the two server addresses saw (RFC 4380 §5.2.1's
    symmetric-NAT test, refined by RFC 6081 §3.3/§3.4)."""
    if primary[0] != secondary[0]:
        return NAT_SYMMETRIC  # a NAT that changes the address too: no port to predict
    if primary[1] == secondary[1]:
        return NAT_CONE
    if 0 < (secondary[1] - primary[1]) % 65536 <= SEQUENTIAL_MAX_DELTA:
        return NAT_SEQUENTIAL
    if local_port is not None and primary[1] == local_port:
        return NAT_PRESERVING
    return NAT_SYMMETRIC


class _Records:
    """A bounded, expiring map (insertion order = age): the extensions' only memory."""

    __slots__ = ("_d", "_life")

    def __init__(self, lifetime: int = RECORD_SECONDS) -> None:
        self._d: dict[Any, tuple[int, Any]] = {}
        self._life = lifetime

    def put(self, key: Any, value: Any, t: int) -> None:
        d = self._d
        d.pop(key, None)
        if len(d) >= MAX_RECORDS:
            del d[next(iter(d))]
        d[key] = (t + self._life, value)

    def get(self, key: Any, t: int) -> Any:
        rec = self._d.get(key)
        if rec is None:
            return None
        if rec[0] < t:
            del self._d[key]
            return None
        return rec[1]

    def __len__(self) -> int:
        return len(self._d)


@dataclass(slots=True)
class Probe:
    """An endpoint we sent bubbles to on a peer's word: who asked, and why."""

    peer_ip: str  # the public IPv4 in the asking peer's Teredo address (its NAT)
    why: str  # SYMMETRIC, PORT_PREDICTION or HAIRPINNING
    local: bool  # a private address behind our own NAT (hairpinning)


class Rfc6081:
    """The client's RFC 6081 state.  The client asks it what to add to a bubble and what to
    do with a peer's trailers; it never sends anything itself."""

    def __init__(self, ext: ExtensionSet, randbits: Callable[[int], int]) -> None:
        self.ext = ext
        self._randbits = randbits
        self.nat = NAT_UNKNOWN
        self.mapped: Endpoint | None = None
        self.secondary_mapped: Endpoint | None = None
        self.local_port: int | None = None
        self.local_ips: list[str] = []
        self.extra_sockets = False
        """Set by the runtime (or a test) when it opens the extra sockets of
        `socket_requests`; without them the port-preserving extension stays idle."""
        self.seq_next: int | None = None
        """Sequential NAT: the port we expect its next new mapping to get."""
        self._nonces = _Records()  # peer address -> the nonce we put in its bubbles
        self._seen = _Records()  # origin IPv4 -> nonce of its last indirect bubble
        self._probed = _Records()  # endpoint -> Probe
        self._alt_sent = _Records()  # peer address -> True (we sent it our private addresses)
        self._predicted = _Records()  # peer address -> the port our Random Port trailer named
        self._slr = _Records(SLR_SECONDS)  # peer address -> True: it answers ND solicitations
        self._speakers = _Records()  # peer address -> True: its packets carried trailers
        self._offered: dict[bytes, set[str]] = {}  # peer -> extensions our bubbles used
        self.used: dict[bytes, set[str]] = {}  # peer -> extensions that made it reachable
        self.counts: dict[str, int] = dict.fromkeys((*NAMES, PORT_PREDICTION), 0)
        self._sockets: dict[Endpoint, int] = {}  # peer mapping -> extra socket index
        self._socket_ports: dict[int, int] = {}
        self.upnp: tuple[str, int, int] | None = None
        """§3.2: (external IPv4, external port, lease) the runtime holds on the LAN's IGD."""
        self.upnp_why = "not tried"
        """Why there is no usable mapping (the status shows it)."""

    # -- our own NAT --------------------------------------------------------------------------

    def set_upnp(self, mapping: tuple[str, int, int] | None, why: str) -> None:
        """The runtime's host fact: the UDP mapping of our Teredo port on the IGD, or None
        and why not."""
        self.upnp = mapping
        self.upnp_why = why if mapping is None else ""

    @property
    def upnp_endpoint(self) -> Endpoint | None:
        """The mapping to advertise (§3.2, docs/protocol.md §13.8): only while the extension
        is on, our NAT is not cone-like (a cone NAT needs no help, and the engine would stop
        sending direct bubbles for nothing), and the IGD's external address is the one the
        server sees (with another NAT in front the mapping is no use to a peer)."""
        m = self.upnp
        if (m is None or not self.ext.upnp_symmetric_nat or self.mapped is None
                or self.nat in (NAT_CONE, NAT_UNKNOWN) or m[0] != self.mapped[0]
                or m[1] == self.mapped[1]):
            return None
        return (m[0], m[1])

    def upnp_status(self) -> dict[str, Any] | None:
        m = self.upnp
        if m is None:
            return {"mapping": None, "why": self.upnp_why}
        ep = self.upnp_endpoint
        why = ""
        if ep is None:
            if self.mapped is not None and m[0] != self.mapped[0]:
                why = "the IGD's external address is not the one the server sees"
            elif self.mapped is not None and m[1] == self.mapped[1]:
                why = "the mapping is the one the server sees already"
            elif self.nat in (NAT_CONE, NAT_UNKNOWN):
                why = f"not advertised: NAT {self.nat}"
        return {"mapping": {"ip": m[0], "port": m[1], "lease": m[2]},
                "advertised": ep is not None, "why": why}

    def qualified(self, mapped: Endpoint) -> bool:
        """A new mapping from the primary server; True when a NAT probe should be sent."""
        if mapped != self.mapped:
            self.mapped = mapped
            self.secondary_mapped = None
            self.nat = NAT_UNKNOWN
            self.seq_next = None
        return self.ext.needs_nat_probe and self.secondary_mapped is None

    def probed_secondary(self, mapping: Endpoint) -> None:
        """The RA of our RS to the secondary server address named `mapping`."""
        if self.mapped is None:
            return
        self.secondary_mapped = mapping
        self.nat = classify(self.mapped, mapping, self.local_port)
        if self.nat == NAT_SEQUENTIAL:
            self.seq_next = (mapping[1] + (mapping[1] - self.mapped[1]) % 65536) % 65536

    # -- sending bubbles to a peer ------------------------------------------------------------

    def _nonce_for(self, peer: bytes, t: int) -> bytes:
        n = self._nonces.get(peer, t)
        if n is None:
            n = self._randbits(32).to_bytes(4, "big")
        self._nonces.put(peer, n, t)
        return n

    def plan_socket(self, peer: bytes, direct: Endpoint) -> tuple[int, int] | None:
        """Port-preserving NAT: a fresh local socket (index, port) for bubbles and traffic to
        `direct`, or None.  Its port is random, so the NAT has no mapping holding it yet
        and keeps it: the peer is told that port in a Random Port trailer."""
        if not (self.ext.port_preserving_nat and self.nat == NAT_PRESERVING
                and self.extra_sockets):
            return None
        if direct in self._sockets:
            idx = self._sockets[direct]
            return idx, self._socket_ports[idx]
        used = set(self._sockets.values())
        free = [i for i in range(FIRST_EXTRA_SOCKET, FIRST_EXTRA_SOCKET + MAX_EXTRA_SOCKETS)
                if i not in used]
        if not free:  # reuse the oldest
            oldest = next(iter(self._sockets))
            free = [self._sockets.pop(oldest)]
        idx = free[0]
        port = 1024 + self._randbits(16) % (65536 - 1024)
        self._sockets[direct] = idx
        self._socket_ports[idx] = port
        return idx, port

    def socket_for(self, dst: Endpoint) -> int:
        """The extra socket for traffic to `dst` (0: the main socket)."""
        return self._sockets.get(dst, 0)

    @property
    def has_sockets(self) -> bool:
        return bool(self._sockets)

    def bubble_trailers(self, peer: bytes, peer_mapped_ip: str, t: int, *,
                        random_port: int | None = None) -> Trailers:
        """The trailers of our bubbles (direct and indirect) to Teredo peer `peer`."""
        if not self.ext.any:
            return Trailers()
        offered = self._offered.setdefault(peer, set())
        alternates = None
        if self.same_nat(peer_mapped_ip):
            # behind our own NAT: its external ports are no use without hairpinning, so
            # predict none; offer our private addresses instead
            random_port = None
        if (self.ext.hairpinning and self.local_port and self.local_ips
                and self.same_nat(peer_mapped_ip)):
            # only entries the trailer may carry (unicast, port not 0: docs §13.1)
            alternates = tuple(
                (ip, self.local_port) for ip in self.local_ips
                if usable_alternate(socket.inet_aton(ip), self.local_port))[:MAX_ALTERNATES_SENT]
            if alternates:
                self._alt_sent.put(peer, True, t)
                offered.add(HAIRPINNING)
            else:
                alternates = None
        upnp = self.upnp_endpoint
        if upnp is not None and alternates is None and not self.same_nat(peer_mapped_ip) \
                and usable_alternate(socket.inet_aton(upnp[0]), upnp[1]):
            # §3.2: the IGD's mapping, where a peer behind another NAT can start a flow to
            # us that our symmetric NAT lets in (docs/protocol.md §13.8)
            alternates = (upnp,)
            offered.add(UPNP)
        if random_port is not None:
            offered.add(PORT_PRESERVING)
        elif self.ext.sequential_port_nat and self.nat == NAT_SEQUENTIAL \
                and self.seq_next is not None and not self.same_nat(peer_mapped_ip):
            # the prediction made for this peer's first bubble holds for its retries
            random_port = self._predicted.get(peer, t)
            if random_port is None:
                random_port = self.seq_next
            self._predicted.put(peer, random_port, t)
            offered.add(SEQUENTIAL)
        if self.ext.symmetric_nat_support:
            offered.add(SYMMETRIC)
        nd = ND_SOLICITATION if self.ext.server_load_reduction else None
        if len(self._offered) > MAX_RECORDS:
            del self._offered[next(iter(self._offered))]
        return Trailers(nonce=self._nonce_for(peer, t), alternates=alternates, nd=nd,
                        random_port=random_port)

    def is_new(self, peer: bytes) -> bool:
        """No bubble of ours has gone to `peer` yet (so the next opens a new mapping)."""
        return peer not in self._offered

    def same_nat(self, peer_mapped_ip: str) -> bool:
        """The peer's address names our own public IPv4: it is behind the same NAT."""
        return self.mapped is not None and peer_mapped_ip == self.mapped[0]

    def opened_mapping(self) -> None:
        """We sent the first packet to a new destination: a sequential NAT moved on."""
        if self.seq_next is not None and self.mapped is not None:
            step = (self.secondary_mapped[1] - self.mapped[1]) % 65536 \
                if self.secondary_mapped else 1
            self.seq_next = (self.seq_next + step) % 65536

    # -- a peer's trailers ----------------------------------------------------------------------

    def on_indirect(self, origin: Endpoint, tr: Trailers, t: int) -> list[tuple[Endpoint, str]]:
        """An indirect bubble from `origin` (via our server) carried `tr`: the endpoints to
        send a bubble to, each with the extension it serves (the origin itself is answered
        by the RFC 4380 path already)."""
        if not tr or self.mapped is None:
            return []
        if tr.nonce is not None:
            self._seen.put(origin[0], tr.nonce, t)
        out: list[tuple[Endpoint, str]] = []
        self._probed.put(origin, Probe(origin[0], SYMMETRIC, False), t)
        if tr.random_port is not None and (self.ext.sequential_port_nat
                                           or self.ext.port_preserving_nat):
            for i in range(PROBE_WINDOW):
                port = (tr.random_port + i) % 65536
                if port == 0 or port == origin[1]:
                    continue
                ep = (origin[0], port)
                self._probed.put(ep, Probe(origin[0], PORT_PREDICTION, False), t)
                out.append((ep, PORT_PREDICTION))
        if tr.alternates and self.ext.upnp_symmetric_nat and origin[0] != self.mapped[0]:
            # §3.2: an entry at the peer's own public IPv4 but another port is the mapping
            # it holds on its IGD; bubbling it opens the flow its symmetric NAT admits
            for ep in tr.alternates[:MAX_ALTERNATES]:
                if ep[0] != origin[0] or ep[1] in (0, origin[1]):
                    continue
                self._probed.put(ep, Probe(origin[0], UPNP, False), t)
                out.append((ep, UPNP))
        if (tr.alternates and self.ext.hairpinning and origin[0] == self.mapped[0]):
            for ep in tr.alternates[:MAX_ALTERNATES]:
                if ep[1] == 0 or ep[0] in self.local_ips:
                    continue
                self._probed.put(ep, Probe(origin[0], HAIRPINNING, True), t)
                out.append((ep, HAIRPINNING))
        return out

    def accept(self, peer: bytes, peer_mapped_ip: str, src: Endpoint, t: int) -> int:
        """R9 for a Teredo source `peer` seen at `src`, which is not the mapping in its
        address: 0 refuse, 1 accept, 2 accept as a local peer (behind our own NAT).

        Only an endpoint we sent bubbles to on that peer's word, in the last
        `RECORD_SECONDS`, qualifies, and the peer's address must name the NAT it asked
        from: the answer proves the peer sits at that endpoint as RFC 4380's bubble
        exchange does."""
        probe = self._probed.get(src, t)
        if probe is None or probe.peer_ip != peer_mapped_ip:
            return 0
        why = probe.why
        if why == SYMMETRIC and not self.ext.symmetric_nat_support:
            return 0
        self._note(peer, why)
        return 2 if probe.local else 1

    def accept_other_port(self, peer: bytes, src: Endpoint, tr: Trailers | None,
                          t: int) -> bool:
        """§3.1: a bubble from `peer`'s own public IPv4 (`src`) but not the port in its
        address: a peer behind a symmetric NAT, from the port its NAT gave it towards us.
        Taken when it carries the nonce that IPv4 sent through our server, or echoes ours,
        or (a peer without trailers) answers bubbles we sent it in the last 30 s."""
        if not self.ext.symmetric_nat_support:
            return False
        nonce = tr.nonce if tr is not None else None
        ok = ((nonce is not None and (self._seen.get(src[0], t) == nonce
                                      or self._nonces.get(peer, t) == nonce))
              or (nonce is None and self._nonces.get(peer, t) is not None))
        if ok:
            self._note(peer, SYMMETRIC)
        return ok

    def heard(self, peer: bytes, t: int) -> None:
        """A packet from Teredo source `peer` carried trailers: it speaks RFC 6081."""
        self._speakers.put(peer, True, t)

    def speaks(self, peer: bytes, t: int) -> bool:
        return bool(self._speakers.get(peer, t))

    def is_our_nonce(self, peer: bytes, nonce: bytes, t: int) -> bool:
        return self._nonces.get(peer, t) == nonce

    def accept_hairpin_answer(self, peer: bytes, peer_mapped_ip: str, nonce: bytes,
                              t: int) -> bool:
        """A bubble from a private endpoint echoing the nonce we sent `peer` with our
        Alternate Address trailer: a peer behind our own NAT answering on its private
        address.  True: a local peer (kept 600 s and bubbled on that address)."""
        if (not self.same_nat(peer_mapped_ip) or not self._alt_sent.get(peer, t)
                or self._nonces.get(peer, t) != nonce):
            return False
        self._note(peer, HAIRPINNING)
        return True

    def _note(self, peer: bytes, why: str) -> None:
        used = self.used.get(peer)
        if used is None:
            if len(self.used) >= MAX_RECORDS:
                del self.used[next(iter(self.used))]
            used = self.used[peer] = set()
        if why not in used:
            used.add(why)
            self.counts[why] += 1

    def confirm(self, peer: bytes, nonce: bytes, t: int) -> bool:
        """A bubble from `peer` echoed the nonce of our trailers: it acted on them, so the
        extensions our bubbles offered it are in use (§3.1 counts for us only when our own
        NAT is the symmetric side and nothing more specific was offered)."""
        if self._nonces.get(peer, t) != nonce:
            return False
        offered = self._offered.get(peer, set()) - {SYMMETRIC}
        if not offered and self.nat not in (NAT_CONE, NAT_UNKNOWN):
            offered = {SYMMETRIC}
        for why in offered:
            self._note(peer, why)
        return True

    # -- §3.6 server load reduction ----------------------------------------------------------

    def answer_nd(self, tr: Trailers | None) -> Trailers:
        """The trailers of our answer to a bubble carrying `tr`: its nonce echoed, and an
        ND advertisement when it solicited one and the extension is on."""
        if tr is None:
            return Trailers()
        nd = (ND_ADVERTISEMENT if tr.nd == ND_SOLICITATION and self.ext.server_load_reduction
              else None)
        return Trailers(nonce=tr.nonce, nd=nd)

    def advertised(self, peer: bytes, tr: Trailers | None, t: int) -> None:
        """A bubble from `peer` advertised that it answers ND solicitations directly."""
        if tr is not None and tr.nd == ND_ADVERTISEMENT and self.ext.server_load_reduction:
            if not self._slr.get(peer, t):
                self._note(peer, SERVER_LOAD_REDUCTION)
            self._slr.put(peer, True, t)

    def direct_refresh(self, peer: bytes, t: int) -> bool:
        """Refresh `peer` with a direct bubble only (it answered our solicitations)."""
        return self.ext.server_load_reduction and bool(self._slr.get(peer, t))

    def peer_extensions(self, peer: bytes) -> list[str]:
        """The status JSON's per-peer list: extensions the path to this peer rests on."""
        return sorted(self.used.get(peer, ()))

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.ext.names(),
            "nat": self.nat,
            "secondary_mapped": (
                {"ip": self.secondary_mapped[0], "port": self.secondary_mapped[1]}
                if self.secondary_mapped else None),
            "used": {k: v for k, v in self.counts.items() if v},
            "extra_sockets": len(self._sockets),
            "upnp": self.upnp_status() if self.ext.upnp_symmetric_nat else None,
        }
