"""The Teredo server role (RFC 4380 §5.3), wire-compatible with miredo-server.

A Teredo server is stateless: it answers Router Solicitations (qualification), relays
indirect bubbles and small ICMPv6 to its own clients with an origin indication, and sends its
clients' direct IPv6 connectivity tests (ping tests) to native IPv6. The input checks S1-S7
and the actions A1-A6 follow miredo's `server.c` order (docs/protocol.md §7.2) so that we accept
and drop exactly what miredo does, with the deliberate differences below, all because a server
on the internet must be neither a reflector nor an open relay:

* per-source token buckets on RS answers, on forwarding to clients and on native forwarding,
  plus global caps on each, see `ServerLimits` (set from the config file with the
  `ServerRateLimit`, `Server*Rate[Total]` and `ServerRateSources` directives);
* A6 forwards only to clients of *this* server (destination's server field == our primary).
  miredo also forwards, without an origin, to Teredo addresses of other servers, which no
  legitimate Teredo node needs (indirect bubbles go to the destination's own server) and which
  lets a spoofed packet be bounced at any IPv4:port;
* A5 sends to native IPv6 only ICMPv6 Echo Requests (what a ping test is), with the hop limit
  capped at `MAX_NATIVE_HOP_LIMIT`.  miredo sends any ICMPv6 of up to 88 bytes as it came, so
  one spoofed datagram makes the server emit a Neighbor Advertisement (hop limit 255) on its
  own IPv6 link and repoint the router's neighbour entry for any address of that link;
* an RS without an authentication header gets an RA without one (miredo sends stale bytes);
* A6 forwards at most `MAX_RELAYED_TRAILER` bytes after the IPv6 packet: miredo forwards the
  whole datagram, so a bubble (or an 88-byte ICMPv6, A4) followed by up to 64 KiB of arbitrary
  "trailer" would make the server an open UDP relay towards any ip:port written in a Teredo
  address, which is what A4 means to prevent.  RFC 6081 trailers are a few dozen bytes.

* an RS without an authentication header (a "bare" RS: neither miredo's client nor ours
  sends one, and a miredo client accepts no RA without the header) is answered only within a
  small budget per source /24 (`ServerBareRSLimit`), unless it is at least as long as its
  answer (padded with ND options, which RFC 4861 receivers skip): a spoofed bare RS would
  otherwise get 2.17 times its UDP payload back (miredo: 2.44).

What stays open by design (RFC 4380): anyone may have the server send a bubble or a small
ICMPv6 to any ip:port written in a Teredo address of this server (that is how relays and peers
reach a client behind its NAT), and a spoofed RS with an authentication header gets the RA
the RFC requires (117 bytes for 61: 1.92 times the UDP payload, 1.63 times the IP bytes)
sent to the spoofed source.  Both are per-source and globally rate-limited; the factors of
every request type are in docs/security.md (`tests/sim/test_server_amplification.py`).

Every drop is counted in `counters.drops` under a reason named after the rule:

| reason | rule |
|---|---|
| `s1_malformed` | not a Teredo datagram / IPv6 sanity check failed (§2.3) |
| `s2_not_bubble_or_icmpv6` | only bubbles and ICMPv6 are served |
| `s3_source_not_global` | UDP source is not a global unicast IPv4 (spoofed / private) |
| `s3_source_port_zero` | UDP source port 0: no answer can be sent there |
| `s5_mapping_mismatch` | Teredo source whose embedded ip:port is not the UDP source |
| `s7_not_for_us` | native/link-local source to something that is not one of our clients |
| `a1_loop` | the packet comes from one of our own server sockets |
| `a2_not_rs` | to ff02::2 / our link-local but not a Router Solicitation |
| `a3_dst_not_global` | destination ::, ::1, fe80::/10 or multicast |
| `a4_icmpv6_too_big` | ICMPv6 with more than 88 payload bytes |
| `a5_not_echo_request` | to native IPv6 but not an ICMPv6 Echo Request (no ND injection) |
| `a6_mapped_not_global` | destination's embedded IPv4 is not global |
| `a6_mapped_port_zero` | destination's embedded port is 0 (no NAT maps it; unsendable) |
| `a6_not_our_client` | Teredo destination of another server (we are no open relay) |
| `a6_trailer_too_long` | more than `MAX_RELAYED_TRAILER` bytes after the IPv6 packet |
| `rs_rate_limited` | RS answers over the per-source or global budget |
| `rs_bare_rate_limited` | a short RS without authentication header over its per-/24 budget |
| `forward_rate_limited` | forwarding to clients over the per-source or global budget |
| `forward_destination_rate_limited` | forwarding to one client IPv4 over its budget |
| `raw6_rate_limited` | native IPv6 forwarding over the per-source or global budget |
"""

from __future__ import annotations

from collections import Counter

from .addr import (
    ALL_ROUTERS,
    TEREDO_PORT,
    TEREDO_PREFIX,
    has_prefix,
    ipv4_pack,
    ipv6_text,
    is_global6,
    is_global_unicast_ipv4,
    is_global_unicast_ipv4_int,
    is_valid_prefix,
    mapped_ipv4_int,
    mapping_of,
    secondary_server_address,
    server_link_local,
)
from .counters import Counters
from .errors import ParseError
from .events import Event, StateChanged
from .ratelimit import GlobalLimiter, KeyedLimiter, Rate
from .records import dataclass, field, replace
from .role import Endpoint, RoleBase, UdpDatagram
from .wire import (
    AUTH_MIN_LEN,
    ICMP6_ECHO_REQUEST,
    MAX_MTU,
    MIN_MTU,
    ND_ROUTER_SOLICIT,
    NH_ICMPV6,
    Origin,
    is_bubble,
    parse_datagram,
    router_advertisement,
)

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from typing import Any

    from engine.config.model import EngineConfig

MAX_RELAYED_ICMPV6 = 88
"""ICMPv6 payload bytes a server relays at most (A4): enough for ping tests, useless for abuse."""

MAX_NATIVE_HOP_LIMIT = 254
"""Highest hop limit of a ping test sent to native IPv6 (255 is Neighbor Discovery's)."""

MAX_RELAYED_TRAILER = 512
"""Bytes after the IPv6 packet (RFC 6081 trailers) relayed to a client at most (A6)."""

HOUSEKEEPING_PERIOD = 10.0
"""How often idle rate-limit buckets are forgotten (bounded work per run)."""

SOCK_PRIMARY = 0
SOCK_SECONDARY = 1


@dataclass(frozen=True)
class ServerLimits:
    """Rate limits of the server; the defaults leave real clients and relays untouched.

    A client sends one RS per ~30 s (a few more while qualifying), so 20/s with a burst of 50
    per source IPv4 only bites on floods -- also with many clients behind one CGN address.
    Forwarding to clients carries relays' indirect bubbles (≤ 4 per peer), hence the larger
    per-source budget. Native forwarding carries only ping tests (≤ 4 per peer).
    The totals cap what spoofed sources spread over many addresses can get out of us.
    Config directives (server mode): `ServerRSRate`, `ServerRSRateTotal`,
    `ServerForwardRate`, `ServerForwardRateTotal`, `ServerForwardDestinationRate`,
    `ServerBareRSLimit`, `ServerNativeRate`,
    `ServerNativeRateTotal` (each `RATE[/BURST]` or `off`), `ServerRateSources`, and
    `ServerRateLimit off` for none at all.
    """

    rs_per_source: Rate = field(default_factory=lambda: Rate(20, 50))
    rs_total: Rate = field(default_factory=lambda: Rate(10000, 20000))
    forward_per_source: Rate = field(default_factory=lambda: Rate(500, 1000))
    raw6_per_source: Rate = field(default_factory=lambda: Rate(50, 100))
    raw6_total: Rate = field(default_factory=lambda: Rate(5000, 10000))
    max_sources: int = 65536
    forward_total: Rate = field(default_factory=lambda: Rate(20000, 40000))
    # per destination IPv4 (all ports): the per-source buckets are keyed by a spoofable
    # address, so without this one victim port takes everything rotating sources can send
    forward_per_destination: Rate = field(default_factory=lambda: Rate(200, 400))
    # per source /24, for an RS without authentication header shorter than its RA: no known
    # client sends one, and its answer is 2.17 times its size; a /24 rather than the source
    # address, because a reflection victim is a network and its addresses are all spoofable
    bare_rs_per_prefix: Rate = field(default_factory=lambda: Rate(1, 4))

    @classmethod
    def unlimited(cls) -> ServerLimits:
        """miredo's behaviour: no limits at all (benchmarks, interop comparisons)."""
        none = Rate(None)
        return cls(none, none, none, none, none, forward_total=none,
                   forward_per_destination=none, bare_rs_per_prefix=none)

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> ServerLimits:
        """`ServerRateLimit`, the rate directives and `ServerRateSources` over the defaults."""
        if not cfg.server_rate_limit:
            return cls.unlimited()
        changes: dict[str, Any] = {
            name: Rate(rate, burst) for name, rate, burst in cfg.server_rates
        }
        sources = cfg.server_rate_sources
        if sources is not None:
            changes["max_sources"] = sources
        return replace(cls(), **changes)


def _check_ipv4(name: str, ip: str) -> str:
    try:
        ok = is_global_unicast_ipv4(ip)
    except ValueError:
        raise ValueError(f"server {name} {ip!r}: not an IPv4 address") from None
    if not ok:
        raise ValueError(f"server {name} {ip}: not a global unicast IPv4 address")
    return ip


class ServerRole(RoleBase):
    """A Teredo server on two UDP sockets (0: primary, 1: secondary) plus raw IPv6 output."""

    role = "server"

    def __init__(
        self,
        primary: str,
        secondary: str | None = None,
        prefix: int = TEREDO_PREFIX,
        mtu: int = MIN_MTU,
        *,
        now: float = 0.0,
        limits: ServerLimits | None = None,
    ) -> None:
        self.primary = _check_ipv4("primary address", primary)
        if secondary is None:
            secondary = secondary_server_address(self.primary)
            if secondary is None:  # unreachable for a global primary, which is never the last
                raise ValueError(f"server primary address {primary}: has no next address")
        self.secondary = _check_ipv4("secondary address", secondary)
        if self.secondary == self.primary:
            raise ValueError(f"server secondary address {secondary}: same as the primary")
        if not is_valid_prefix(prefix):
            raise ValueError(f"server prefix {prefix:#010x}: must be a non-multicast 32-bit value")
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"server MTU {mtu}: must be within {MIN_MTU}-{MAX_MTU}")
        self.prefix = prefix
        self.mtu = mtu
        self.link_local = server_link_local(self.primary)
        self._primary_packed = ipv4_pack(self.primary)
        self._own = {(self.primary, TEREDO_PORT), (self.secondary, TEREDO_PORT)}
        # what a bare RS gets back: an RA without authentication header (fixed for our MTU)
        self._bare_ra_len = len(router_advertisement(
            None, Origin(self.primary, TEREDO_PORT), prefix, self.primary, mtu, ALL_ROUTERS
        )) - AUTH_MIN_LEN
        self.set_limits(limits or ServerLimits(), now)
        self.udp_out: list[UdpDatagram] = []
        self.tun_out: list[bytes] = []  # stays empty: a server has no TUN device
        self.raw6_out: list[bytes] = []
        self.events: list[Event] = [StateChanged("running", f"serving on {self.primary}")]
        self.counters = Counters()
        self.handled: Counter[str] = Counter()  # what was done: ra_sent, forwarded_*
        self.started = now
        self._next_housekeeping = now + HOUSEKEEPING_PERIOD

    def set_limits(self, limits: ServerLimits, now: float) -> None:
        """(Re)build the limiters; buckets start full (a reload forgives past bursts)."""
        self.limits = lim = limits
        self.rs_limiter = KeyedLimiter(lim.rs_per_source, lim.max_sources)
        self.rs_total = GlobalLimiter(lim.rs_total, now)
        self.forward_limiter = KeyedLimiter(lim.forward_per_source, lim.max_sources)
        self.forward_total = GlobalLimiter(lim.forward_total, now)
        self.forward_dest_limiter = KeyedLimiter(lim.forward_per_destination, lim.max_sources)
        self.bare_rs_limiter = KeyedLimiter(lim.bare_rs_per_prefix, lim.max_sources)
        self.raw6_limiter = KeyedLimiter(lim.raw6_per_source, lim.max_sources)
        self.raw6_total = GlobalLimiter(lim.raw6_total, now)

    @classmethod
    def from_config(
        cls, cfg: EngineConfig, *, now: float = 0.0, limits: ServerLimits | None = None
    ) -> ServerRole:
        """Build from a server's config; the limits come from the config's rate directives
        unless given."""
        if cfg.server_bind_address is None:
            raise ValueError("server: the config has no ServerBindAddress")
        return cls(
            cfg.server_bind_address,
            cfg.server_bind_address2,
            cfg.prefix,
            cfg.interface_mtu,
            now=now,
            limits=limits if limits is not None else ServerLimits.from_config(cfg),
        )

    def reconfigure(self, cfg: EngineConfig, now: float) -> bool:
        """SIGHUP: new rate limits apply in place; anything else needs a new worker."""
        secondary = cfg.server_bind_address2 or self.secondary
        same = (
            cfg.server_bind_address == self.primary
            and secondary == self.secondary
            and cfg.prefix == self.prefix
            and cfg.interface_mtu == self.mtu
        )
        if not same:
            return False
        limits = ServerLimits.from_config(cfg)
        if limits != self.limits:
            self.set_limits(limits, now)
        return True

    # -- input ---------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        c = self.counters
        c.udp_in_packets += 1
        c.udp_in_bytes += len(data)
        try:
            dgram = parse_datagram(data)
        except ParseError:
            c.drop("s1_malformed")
            return
        pkt = dgram.ipv6
        nh = pkt[6]
        plen = (pkt[4] << 8) | pkt[5]
        bubble = is_bubble(pkt)
        # S2: only bubbles and ICMPv6
        if not bubble and nh != NH_ICMPV6:
            c.drop("s2_not_bubble_or_icmpv6")
            return
        # S3: no spoofed private/martian UDP sources
        src_ip = src[0]
        try:
            global_src = is_global_unicast_ipv4(src_ip)
        except ValueError:
            global_src = False
        if not global_src:
            c.drop("s3_source_not_global")
            return
        if src[1] == 0:
            # an RA or an origin indication for port 0 could not be sent: the kernel refuses
            c.drop("s3_source_port_zero")
            return
        ip_src = pkt[8:24]
        ip_dst = pkt[24:40]
        prefix = self.prefix
        if (
            ip_src[0] == 0xFE
            and (ip_src[1] & 0xC0) == 0x80
            and ip_dst == ALL_ROUTERS
            and nh == NH_ICMPV6
            and plen >= 8
            and pkt[40] == ND_ROUTER_SOLICIT
        ):
            pass  # S4: a Router Solicitation from a link-local source
        elif has_prefix(ip_src, prefix):
            # S5: a Teredo source must come from the mapping it claims (anti-spoofing)
            if mapping_of(ip_src) != tuple(src):
                c.drop("s5_mapping_mismatch")
                return
        elif not (has_prefix(ip_dst, prefix) and ip_dst[4:8] == self._primary_packed):
            # S6 accepts native/link-local sources only towards our own clients; S7 the rest
            c.drop("s7_not_for_us")
            return
        # A1: never talk to ourselves
        if src[1] == TEREDO_PORT and (src_ip, TEREDO_PORT) in self._own:
            c.drop("a1_loop")
            return
        # A2: router discovery
        if ip_dst == ALL_ROUTERS or ip_dst == self.link_local:
            if nh == NH_ICMPV6 and plen >= 8 and pkt[40] == ND_ROUTER_SOLICIT:
                self._answer_rs(dgram.auth.nonce if dgram.auth else None, ip_src, src, sock, now,
                                len(data))
            else:
                c.drop("a2_not_rs")
            return
        # A3
        if not is_global6(ip_dst):
            c.drop("a3_dst_not_global")
            return
        # A4: no open ICMPv6 relay
        if not bubble and plen > MAX_RELAYED_ICMPV6:
            c.drop("a4_icmpv6_too_big")
            return
        if not has_prefix(ip_dst, prefix):
            # A5: a client's direct IPv6 connectivity test, to native IPv6 (40+plen bytes only).
            # Only an Echo Request is a ping test.  Anything else (a Neighbor Advertisement or
            # Solicitation, a Redirect, an RA, a bubble) would come out of our raw socket onto
            # the server's own IPv6 link, where a hop limit 255 ND message from "anywhere on the
            # IPv4 Internet" rewrites the router's neighbour cache (issue 9, docs/security.md).
            if bubble or plen < 8 or pkt[40] != ICMP6_ECHO_REQUEST or pkt[41] != 0:
                c.drop("a5_not_echo_request")
                return
            if pkt[7] > MAX_NATIVE_HOP_LIMIT:
                # never emit hop limit 255: ND receivers accept only that value (RFC 4861 §7.1),
                # so even a future slip in the type check cannot reach a neighbour cache.
                # The ICMPv6 checksum does not cover the hop limit.
                pkt = pkt[:7] + bytes((MAX_NATIVE_HOP_LIMIT,)) + pkt[8:]
            if not (self.raw6_limiter.allow(src_ip, now) and self.raw6_total.allow(now)):
                c.drop("raw6_rate_limited")
                return
            self.raw6_out.append(pkt)
            c.raw6_out_packets += 1
            c.raw6_out_bytes += len(pkt)
            self.handled["forwarded_native"] += 1
            return
        # A6: to one of our clients, from the primary socket, with an origin indication
        if ip_dst[4:8] != self._primary_packed:
            c.drop("a6_not_our_client")
            return
        # the embedded client IPv4, de-obfuscated, tested as an int (no text round trip)
        if not is_global_unicast_ipv4_int(mapped_ipv4_int(ip_dst)):
            c.drop("a6_mapped_not_global")
            return
        if ip_dst[10] == 0xFF and ip_dst[11] == 0xFF:  # obfuscated port 0
            c.drop("a6_mapped_port_zero")
            return
        if dgram.trailer_len > MAX_RELAYED_TRAILER:
            c.drop("a6_trailer_too_long")
            return
        if not (self.forward_limiter.allow(src_ip, now) and self.forward_total.allow(now)):
            c.drop("forward_rate_limited")
            return
        dst_map = mapping_of(ip_dst)
        if not self.forward_dest_limiter.allow(dst_map[0], now):
            c.drop("forward_destination_rate_limited")
            return
        payload = Origin(src_ip, src[1]).pack() + dgram.remainder  # trailers travel on
        self.udp_out.append((SOCK_PRIMARY, payload, dst_map))
        c.udp_out_packets += 1
        c.udp_out_bytes += len(payload)
        self.handled["forwarded_teredo"] += 1

    def _answer_rs(
        self,
        nonce: bytes | None,
        rs_src: bytes,
        src: Endpoint,
        sock: int,
        now: float,
        size: int,
    ) -> None:
        """The RA for an accepted RS of ``size`` bytes (UDP payload)."""
        c = self.counters
        # A bare RS would get more bytes back than it sent, towards a spoofable source:
        # answered only within a small budget per source /24 (issue 9, amplification).
        if (
            nonce is None
            and size < self._bare_ra_len
            and not self.bare_rs_limiter.allow(src[0].rpartition(".")[0], now)
        ):
            c.drop("rs_bare_rate_limited")
            return
        if not (self.rs_limiter.allow(src[0], now) and self.rs_total.allow(now)):
            c.drop("rs_rate_limited")
            return
        payload = router_advertisement(
            nonce, Origin(src[0], src[1]), self.prefix, self.primary, self.mtu, rs_src
        )
        if nonce is None:  # the builder always adds auth (as miredo); echo its absence
            payload = payload[AUTH_MIN_LEN:]
        # §7.3: a cone-flagged RS source is answered from the *other* address (cone probing)
        in_sock = SOCK_SECONDARY if sock == SOCK_SECONDARY else SOCK_PRIMARY
        out_sock = (SOCK_SECONDARY - in_sock) if rs_src[8] & 0x80 else in_sock
        self.udp_out.append((out_sock, payload, (src[0], src[1])))
        c.udp_out_packets += 1
        c.udp_out_bytes += len(payload)
        self.handled["ra_sent"] += 1

    # -- time ----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        return self._next_housekeeping

    def handle_timer(self, now: float) -> None:
        if now < self._next_housekeeping:
            return
        for lim in (self.rs_limiter, self.forward_limiter, self.forward_dest_limiter,
                    self.raw6_limiter, self.bare_rs_limiter):
            lim.expire(now, max_scan=1024)
        self._next_housekeeping = now + HOUSEKEEPING_PERIOD

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        p = self.prefix.to_bytes(4, "big") + bytes(12)
        return {
            "role": "server",
            "state": "running",
            "server": self.primary,
            "server2": self.secondary,
            "prefix": ipv6_text(p) + "/32",
            "mtu": self.mtu,
            "link_local": ipv6_text(self.link_local),
            "handled": dict(self.handled),
            "ratelimit": {
                "rs_per_source": self.rs_limiter.stats(),
                "rs_total_denied": self.rs_total.denied,
                "forward_per_source": self.forward_limiter.stats(),
                "forward_total_denied": self.forward_total.denied,
                "forward_per_destination": self.forward_dest_limiter.stats(),
                "bare_rs_per_prefix": self.bare_rs_limiter.stats(),
                "raw6_per_source": self.raw6_limiter.stats(),
                "raw6_total_denied": self.raw6_total.denied,
            },
            "counters": self.counters.as_dict(),
        }
