"""The Teredo client's qualification and maintenance state machine (RFC 4380 §5.2.1, §5.2.5).

It sends Router Solicitations to the Teredo server, validates the Router Advertisements
(docs/protocol.md §3.3), derives the Teredo address from the PIO and the origin indication, and
keeps the NAT mapping alive with periodic refreshes. It is composed into the client role
(`engine.proto.client`), which hands it qualification candidates (`is_candidate` /
`handle_ra`); it can also stand alone as a role-shaped object (`receive_datagram`,
`handle_timer`, `next_timer`, `udp_out`, `events`) for tests.

Where qualification stands is one value, `Qualifier.phase` (a `Phase`), changed only by
`_enter`, which checks the move against `TRANSITIONS` (the model is h11's `_state.py`):
whether the client is up, whether an RS is outstanding and which timer runs all follow from
it, and the `state` word of the status JSON and of `StateChanged` is `Phase.word`.

Same timers as miredo (RS every 4 s, 3 tries, 100 s back-off), with these improvements:

* a fresh 8-byte nonce per RS from the injected `token_bytes` (miredo: a keyed time hash), and
  only the RA carrying the outstanding nonce, from the address we asked, is accepted;
* the 30 s refresh is jittered uniformly over 75-100 % as RFC 4380 §5.2.5 asks (miredo sends a
  fixed 30 s beat, which synchronises RS bursts, docs/protocol.md §12.2 #9);
* `ServerAddress2` is a fallback: after each failed streak of 3 RSes the other server is tried
  at once, and the 100 s back-off starts only when both have failed in a row (miredo ignores
  the second address, §12.2 #1). The RA of the fallback must name that server in its PIO (rule
  §3.3.7), so the fallback helps when ServerAddress2 is an independent Teredo server; a miredo
  server's *secondary* address answers with the primary's prefix and is refused as spoofing;
* `kick(now)` re-qualifies at once (the runtime calls it when the host's IPv4 changes), where
  miredo waits for the next refresh (§12.2 #12).

Flags are `randbits(16) & 0x3CFF` (RFC 5991), drawn again only when the address the RA gives
(with the old flags) differs from the current one, i.e. when the mapping or the server changed.

Drops of qualification candidates are counted in `counters.drops`:
`ra_unexpected` (no RS outstanding), `ra_wrong_server` (UDP source is not the server asked),
`ra_nonce_mismatch`, `ra_auth_failed` (confirmation byte != 0), `ra_no_origin`,
`ra_pio_server_mismatch` (PIO names another server), `ra_bad_mtu`, `ra_invalid` (any other
malformed RA: missing/second/short PIO, prefix length, options, type/code).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from .addr import (
    LL_CLIENT,
    TEREDO_PORT,
    ipv6_text,
    is_global_unicast_ipv4,
    random_flags,
)
from .counters import Counters
from .errors import ParseError
from .events import (
    Event,
    InterfaceDown,
    InterfaceUp,
    MappingChanged,
    ServerLost,
    StateChanged,
)
from .wire import Teredo, accept_router_advertisement, parse_datagram, router_solicitation

QUALIFICATION_DELAY = 4.0
"""Seconds to wait for the RA after each RS (miredo's QualificationDelay)."""
QUALIFICATION_RETRIES = 3
"""Consecutive unanswered RSes that make a failed streak."""
REFRESH_DELAY = 30.0
"""Nominal refresh period, counted from the previous RS; jittered to 75-100 %."""
REFRESH_JITTER_MIN = 0.75
RESTART_DELAY = 100.0
"""Back-off after the servers failed, counted from the last RS (as miredo)."""
DEFAULT_MTU = 1280

_FIELD_REASONS = {
    "auth": "ra_invalid",
    "auth.nonce": "ra_nonce_mismatch",
    "auth.confirmation": "ra_auth_failed",
    "origin": "ra_no_origin",
    "ra.pio.server": "ra_pio_server_mismatch",
    "ra.mtu": "ra_bad_mtu",
}


class Phase(Enum):
    """Where qualification stands.  The value is the word the status JSON shows."""

    STARTING = "starting"
    """Built; the first RS goes out at the first timer."""
    QUALIFYING = "qualifying"
    """Never qualified yet; an RS is outstanding."""
    QUALIFIED = "qualified"
    """Up; the refresh RS is scheduled."""
    REFRESHING = "refreshing"
    """Up; a refresh RS is outstanding (shown as ``qualified``: nothing is wrong yet)."""
    LOST = "lost"
    """Was qualified, a whole streak of RSes went unanswered; an RS to a server is outstanding."""
    BACKOFF = "backoff"
    """Every server failed a streak in a row; the next RS waits `RESTART_DELAY`."""

    @property
    def word(self) -> str:
        """The `state` of the status JSON and of `StateChanged`."""
        return "qualified" if self is Phase.REFRESHING else self.value

    @property
    def up(self) -> bool:
        """The Teredo address is usable."""
        return self is Phase.QUALIFIED or self is Phase.REFRESHING

    @property
    def soliciting(self) -> bool:
        """An RS is outstanding: its nonce is the only one an RA may carry, and the timer is
        its deadline (otherwise the timer is the next RS)."""
        return self in _SOLICITING


_SOLICITING = frozenset({Phase.QUALIFYING, Phase.REFRESHING, Phase.LOST})

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # the first RS
    Phase.STARTING: frozenset({Phase.QUALIFYING}),
    # an RS again (retry, other server, kick), the RA, or every server failed
    Phase.QUALIFYING: frozenset({Phase.QUALIFYING, Phase.QUALIFIED, Phase.BACKOFF}),
    # the refresh RS (or a kick)
    Phase.QUALIFIED: frozenset({Phase.REFRESHING}),
    # the RA, a retry/kick, or the streak failed: the other server at once, or back-off
    Phase.REFRESHING: frozenset({Phase.REFRESHING, Phase.QUALIFIED, Phase.LOST, Phase.BACKOFF}),
    Phase.LOST: frozenset({Phase.LOST, Phase.QUALIFIED, Phase.BACKOFF}),
    # the RS after the back-off (or a kick)
    Phase.BACKOFF: frozenset({Phase.QUALIFYING, Phase.LOST}),
}
"""Every move `Qualifier._enter` accepts; anything else is a bug and raises."""


def check_server_address(ip: str, what: str = "ServerAddress") -> str:
    """A server address must be a literal global unicast IPv4 (the runtime resolves names)."""
    try:
        ok = is_global_unicast_ipv4(ip)
    except (ValueError, TypeError):
        raise ValueError(
            f"{what} {ip!r}: not an IPv4 address (resolve host names before qualifying)"
        ) from None
    if not ok:
        raise ValueError(f"{what} {ip}: not a global unicast IPv4 address, refusing to use it")
    return ip


class Qualifier:
    """Qualification/maintenance for one client socket (see module docstring)."""

    def __init__(
        self,
        server: str,
        server2: str | None = None,
        *,
        now: float,
        token_bytes: Callable[[int], bytes],
        randbits: Callable[[int], int],
        udp_out: list[tuple[int, bytes, tuple[str, int]]] | None = None,
        events: list[Event] | None = None,
        counters: Counters | None = None,
        sock: int = 0,
    ) -> None:
        self.servers: list[str] = [check_server_address(server)]
        if server2 is not None and server2 != server:
            self.servers.append(check_server_address(server2, "ServerAddress2"))
        self._token_bytes = token_bytes
        self._randbits = randbits
        # shared with the composing client role, so nothing is copied on the way out
        self.udp_out = udp_out if udp_out is not None else []
        self.events = events if events is not None else []
        self.counters = counters if counters is not None else Counters()
        self.sock = sock

        self.phase = Phase.STARTING
        self.address: bytes | None = None  # None while down
        self.mapping: tuple[str, int] | None = None
        self.mtu: int | None = None
        self.flags: int | None = None
        self.last_qualified: float | None = None
        self.last_error = ""
        self._server_idx = 0
        self._last_address: bytes | None = None  # survives a DOWN: flags stay if it returns
        self._nonce: bytes | None = None  # the outstanding RS's, while `phase.soliciting`
        self._rs_sent_at: float | None = None
        self._timer: float | None = now  # the RA deadline while soliciting, else the next RS
        self._failures = 0  # unanswered RSes in the current streak
        self._failed_streaks = 0  # consecutive failed streaks (alternating servers)
        self.rs_sent = 0
        self.ra_accepted = 0

    # -- public view -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The phase as the status JSON words it."""
        return self.phase.word

    @property
    def up(self) -> bool:
        return self.phase.up

    @property
    def ever_up(self) -> bool:
        """Qualified at least once (an RS after that is "lost", not "qualifying")."""
        return self._last_address is not None

    @property
    def server(self) -> str:
        """The server address in use (RSes go there; the address embeds it)."""
        return self.servers[self._server_idx]

    @property
    def server2(self) -> str | None:
        return self.servers[1] if len(self.servers) > 1 else None

    @property
    def outstanding_nonce(self) -> bytes | None:
        return self._nonce if self.phase.soliciting else None

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "server": self.servers[0],
            "server2": self.server2,
            "server_in_use": self.server,
            "address": ipv6_text(self.address) if self.address else None,
            "mapped": (
                {"ip": self.mapping[0], "port": self.mapping[1]} if self.mapping else None
            ),
            "mtu": self.mtu,
            "flags": self.flags,
            "last_qualified": self.last_qualified,
            # the last accepted RA (refreshes included); a composing role may report the
            # time of the last address change as last_qualified instead.  Both are monotonic
            # here and made wall clock by the runtime (contracts §1), which is why the next
            # RS time, a monotonic deadline the runtime does not convert, is not reported.
            "server_last_seen": self.last_qualified,
            "failures": self._failures,
            "rs_sent": self.rs_sent,
            "ra_accepted": self.ra_accepted,
            "last_error": self.last_error or None,
        }

    # -- control ---------------------------------------------------------------------------------
    def kick(self, now: float) -> None:
        """Re-qualify at once (the host's IPv4 or route changed).

        Failure counts start over. While down we also go back to the primary server: what we
        learned about its reachability belongs to the old network.
        """
        self._failures = 0
        self._failed_streaks = 0
        if not self.up:
            self._server_idx = 0
        self._send_rs(now)

    def set_servers(self, server: str, server2: str | None, now: float) -> None:
        """New server addresses (the runtime re-resolved the names); re-qualify if changed."""
        servers = [check_server_address(server)]
        if server2 is not None and server2 != server:
            servers.append(check_server_address(server2, "ServerAddress2"))
        if servers == self.servers:
            return
        in_use = self.server
        self.servers = servers
        self._server_idx = servers.index(in_use) if in_use in servers else 0
        self.kick(now)

    # -- time ------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        if self.phase.soliciting:
            self._rs_timed_out(now)
        else:
            self._send_rs(now)

    def _send_rs(self, now: float) -> None:
        nonce = bytes(self._token_bytes(8))
        if len(nonce) != 8:
            raise ValueError(f"token_bytes(8) returned {len(nonce)} bytes")
        self._nonce = nonce
        self._rs_sent_at = now
        self._timer = now + QUALIFICATION_DELAY
        payload = router_solicitation(nonce)
        # traffic totals are the composing role's (it counts what it moves to its own lists);
        # we count RSes in `rs_sent` and RA drops in `counters.drops`
        self.udp_out.append((self.sock, payload, (self.server, TEREDO_PORT)))
        self.rs_sent += 1
        if self.up:
            self._enter(Phase.REFRESHING, f"refreshing with {self.server}")
        elif self.ever_up:
            self._enter(Phase.LOST, f"soliciting {self.server}")
        else:
            self._enter(Phase.QUALIFYING, f"soliciting {self.server}")

    def _rs_timed_out(self, now: float) -> None:
        self._nonce = None
        self._failures += 1
        if self._failures < QUALIFICATION_RETRIES:
            self._send_rs(now)
            return
        # a failed streak: "No reply from Teredo server"
        self._failures = 0
        self._failed_streaks += 1
        failed = self.server
        self.last_error = f"no reply from Teredo server {failed}"
        if self.up:
            self.address = None
            self.events.append(InterfaceDown())
            self.events.append(ServerLost())
            self._enter(Phase.LOST, f"lost Teredo connectivity with {failed}")
        if len(self.servers) > 1:
            self._server_idx ^= 1
        if self._failed_streaks % len(self.servers):
            self._send_rs(now)  # the other server, at once
            return
        assert self._rs_sent_at is not None
        self._timer = self._rs_sent_at + RESTART_DELAY
        self._enter(Phase.BACKOFF, f"no reply from {failed}; retrying in {RESTART_DELAY:g} s")

    def _refresh_delay(self) -> float:
        u = self._randbits(32) / 2**32  # uniform in [0, 1)
        return REFRESH_DELAY * (REFRESH_JITTER_MIN + (1.0 - REFRESH_JITTER_MIN) * u)

    def _enter(self, phase: Phase, detail: str) -> None:
        """The one place `phase` changes; a `StateChanged` when the shown word changes."""
        old = self.phase
        if phase not in TRANSITIONS[old]:
            raise AssertionError(f"qualification: no move from {old.name} to {phase.name}")
        self.phase = phase
        if phase.word != old.word:
            self.events.append(StateChanged(phase.word, detail))

    # -- input -----------------------------------------------------------------------------------
    @staticmethod
    def is_candidate(dgram: Teredo, src: tuple[str, int]) -> bool:
        """§3.3 step 1: what the client hands to `handle_ra` (and then does not process further).

        From port 3544, with an auth header, to fe80::ffff:ffff:ffff; the source IPv4 is
        checked later so that a spoofed RA is consumed, never delivered.
        """
        return (
            src[1] == TEREDO_PORT and dgram.auth is not None and dgram.ipv6[24:40] == LL_CLIENT
        )

    def handle_ra(self, dgram: Teredo, src: tuple[str, int], now: float) -> bool:
        """Validate a candidate RA; returns True when it was accepted."""
        c = self.counters
        nonce = self._nonce
        if not self.phase.soliciting or nonce is None:
            c.drop("ra_unexpected")
            return False
        if src[0] != self.server:
            c.drop("ra_wrong_server")
            return False
        try:
            ra = accept_router_advertisement(dgram, nonce, self.server)
        except ParseError as e:
            c.drop(_FIELD_REASONS.get(e.field, "ra_invalid"))
            self.last_error = f"router advertisement from {src[0]} rejected: {e}"
            return False
        assert ra.origin is not None  # accept_router_advertisement guarantees it
        self._nonce = None
        self._failures = 0
        self._failed_streaks = 0
        self.ra_accepted += 1
        mapping = (ra.origin.ip, ra.origin.port)
        mtu = ra.link_mtu
        flags = self.flags
        if flags is None or ra.address(flags) != self._last_address:
            flags = random_flags(self._randbits)
        address = ra.address(flags)
        if mapping != self.mapping:
            self.events.append(MappingChanged(self.mapping, mapping))
        changed = not self.up or address != self.address or mtu != self.mtu
        self.flags = flags
        self.mapping = mapping
        self.mtu = mtu
        self.address = address
        self._last_address = address
        self.last_qualified = now
        self.last_error = ""
        if changed:
            self.events.append(InterfaceUp(address, mtu))
        self._enter(Phase.QUALIFIED, f"{ipv6_text(address)} via {self.server}")
        assert self._rs_sent_at is not None
        self._timer = self._rs_sent_at + self._refresh_delay()
        return True

    def receive_datagram(self, data: bytes, src: tuple[str, int], sock: int, now: float) -> None:
        """Stand-alone use (the Qualifier is the role): every datagram of the socket comes here;
        non-candidates are ignored. Only here are incoming bytes counted."""
        c = self.counters
        c.udp_in_packets += 1
        c.udp_in_bytes += len(data)
        try:
            dgram = parse_datagram(data)
        except ParseError:
            c.drop("malformed")
            return
        if self.is_candidate(dgram, src):
            self.handle_ra(dgram, src, now)
        else:
            c.drop("not_qualification")

