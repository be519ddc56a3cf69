"""The Teredo peer table shared by the client and the relay (spec §5.1–§5.4).

Why it looks the way it does:

* A busy public relay keeps one entry per Teredo client it talks to, so a million entries must
  fit in a few hundred MB.  ``Peer`` is a ``__slots__`` record; timestamps are whole seconds and
  the same ``int`` object is shared by every peer touched in the same second (the table hands
  out one cached tick object per second), and the mapping is the ``(ip, port)`` tuple the
  runtime already allocated for ``recvfrom``.  ``tests/unit/test_peer_table_scale.py`` measures
  the result.
* Every lookup is a dict access keyed by the 16-byte IPv6 address.
* Expiry is miredo's two-generation scheme (an idle entry lives between E and 2E seconds), but
  the old generation is released *incrementally*: at a generation swap the old dict is put on a
  "dying" list and freed ``gc_slice`` entries per :meth:`PeerTable.gc_step` call, so a relay
  with a million idle peers never stalls forwarding for a full sweep.
* The per-peer queue is FIFO (miredo's is LIFO, which reorders packets; spec §12.2 #8).

Nothing here reads a clock: every method takes the caller's ``now`` (float seconds on a
monotonic clock) and applies miredo's whole-second rules to ``int(now)``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .addr import ipv6_text

#: The mapping of a peer known only by address so far: a native host behind a relay (client
#: R10/T6), until a ping test's answer names the relay it comes through.
NO_MAPPING = ("0.0.0.0", 0)
#: Per-peer queue budget in bytes, incoming and outgoing packets combined (miredo MAXQUEUE).
MAXQUEUE = 1280
#: Default capacity: miredo built with libJudy.
DEFAULT_CAPACITY = 1 << 20
#: GC generation length E: an idle entry lives between E and 2E seconds.
RELAY_GENERATION = 30
CLIENT_GENERATION = 600
#: Validity: a peer is "valid" while ``now - last_rx`` is within this many seconds.
VALID_SECONDS = 30
VALID_SECONDS_LOCAL = 600
#: Entries freed per gc_step call (bounded work; see module docstring).
DEFAULT_GC_SLICE = 4096

# Results of the rate limiters (spec §5.4).
SEND = 0
LATER = 1
NEVER = 2

#: Bubble limiter: at most this many without an answer, then blocked for BUBBLE_BLOCK seconds.
MAX_BUBBLES = 4
BUBBLE_BLOCK = 300
#: Ping-test limiter: at most this many, never reset by time.
MAX_PINGS = 4
#: Bubbles and pings are spaced by more than this many whole seconds.
RETRY_SPACING = 2


class Peer:
    """One peer (§5.1).  ``mapping`` is the UDP endpoint, ``(ip, port)``; ``queue`` is ``None``
    until something is queued, then a ``deque`` of ``(packet, udp_source_or_None)`` -- the UDP
    source is kept for incoming packets so the flush can deliver only those that came from the
    mapping finally trusted."""

    __slots__ = (
        "bubbles",
        "last_ping",
        "last_rx",
        "last_tx",
        "local",
        "mapping",
        "pings",
        "queue",
        "queue_left",
        "trusted",
    )

    def __init__(self, mapping: tuple[str, int], t: int) -> None:
        self.mapping = mapping
        self.trusted = False
        self.local = False
        self.bubbles = 0
        self.pings = 0
        # miredo leaves these uninitialised (§12.2 #23); we start them at creation time.
        self.last_rx = t
        self.last_tx = t
        self.last_ping = t
        self.queue: deque[tuple[bytes, tuple[str, int] | None]] | None = None
        self.queue_left = MAXQUEUE

    def valid(self, t: int) -> bool:
        """Heard from within 30 s (600 s for a local-discovery peer), whole seconds."""
        return t - self.last_rx <= (VALID_SECONDS_LOCAL if self.local else VALID_SECONDS)

    def may_send_bubble(self, t: int) -> int:
        """miredo's bubble limiter, exactly: ≤4 bubbles, each more than 2 s after the last
        transmission to the peer; after 4, blocked until 300 s have passed, then reset."""
        b = self.bubbles
        if b:
            if b >= MAX_BUBBLES:
                if t - self.last_tx <= BUBBLE_BLOCK:
                    return NEVER
                b = 0
            elif t - self.last_tx <= RETRY_SPACING:
                return LATER
        self.last_tx = t
        self.bubbles = b + 1
        return SEND

    def may_send_ping(self, t: int) -> int:
        """miredo's ping-test limiter: ≤4 pings more than 2 s apart, with no reset by time (only a
        reception or the expiry of the entry clears it)."""
        p = self.pings
        if p:
            if p >= MAX_PINGS:
                return NEVER
            if t - self.last_ping <= RETRY_SPACING:
                return LATER
        self.last_ping = t
        self.pings = p + 1
        return SEND

    def enqueue(self, pkt: bytes, src: tuple[str, int] | None) -> bool:
        """Queue a packet (``src`` is the UDP source for incoming ones, ``None`` for outgoing).
        A packet larger than the remaining budget is refused whole; returns False then."""
        n = len(pkt)
        if n > self.queue_left:
            return False
        self.queue_left -= n
        q = self.queue
        if q is None:
            q = self.queue = deque()
        q.append((pkt, src))
        return True

    def describe(self, key: bytes, t: int) -> dict[str, Any]:
        """One row of the `peers` status command (docs/contracts.md §4)."""
        q = self.queue
        state = ("reachable" if self.valid(t) else "stale") if self.trusted else "pending"
        ip, port = self.mapping
        return {
            "address": ipv6_text(key),
            "mapping": None if self.mapping == NO_MAPPING else {"ip": ip, "port": port},
            "state": state,
            "trusted": self.trusted,
            "local": self.local,
            "last_rx": self.last_rx,
            "last_tx": self.last_tx,
            "queued": 0 if q is None else len(q),
            "queued_bytes": MAXQUEUE - self.queue_left,
            "bubbles": self.bubbles,
            "pings": self.pings,
        }

    def take_queue(self, t: int) -> deque[tuple[bytes, tuple[str, int] | None]] | None:
        """miredo's "predecap": the peer is reachable, so reset the limiters, mark it heard from
        and hand back the queued packets in arrival order (the caller sends them)."""
        self.last_rx = t
        self.bubbles = 0
        self.pings = 0
        q = self.queue
        if q is not None:
            self.queue = None
            self.queue_left = MAXQUEUE
        return q


class PeerTable:
    """Bounded, two-generation peer table keyed by the 16-byte IPv6 address.

    ``recent`` is exposed so that the hot path can try one ``dict.get`` before calling
    :meth:`get`; an entry found in ``old`` is moved back to ``recent`` (miredo: any lookup
    refreshes the entry).
    """

    __slots__ = (
        "_next_swap",
        "capacity",
        "dropped_full",
        "dying",
        "gc_slice",
        "generation",
        "old",
        "recent",
        "second",
        "second_end",
        "second_start",
    )

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        generation: int = RELAY_GENERATION,
        gc_slice: int = DEFAULT_GC_SLICE,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"peers: capacity must be at least 1, got {capacity}")
        if generation < 1:
            raise ValueError(f"peers: generation must be at least 1 s, got {generation}")
        if gc_slice < 1:
            raise ValueError(f"peers: gc_slice must be at least 1, got {gc_slice}")
        self.capacity = capacity
        self.generation = generation
        self.gc_slice = gc_slice
        self.recent: dict[bytes, Peer] = {}
        self.old: dict[bytes, Peer] = {}
        # Released generations still holding memory; freed gc_slice entries at a time.
        self.dying: deque[dict[bytes, Peer]] = deque()
        self._next_swap: float | None = None
        # The cache behind `tick`, public so that the per-packet paths can test it inline
        # (`second_start <= now < second_end`) and skip a method call: `second` is the whole
        # second of every `now` in that range.  Only `tick` writes them.
        self.second: int = 0
        self.second_start = 0.0
        self.second_end = 0.0
        #: lookups that would have created an entry in a full table
        self.dropped_full = 0

    def __len__(self) -> int:
        return len(self.recent) + len(self.old)

    def tick(self, now: float) -> int:
        """Whole seconds of ``now``, returning the same ``int`` object for the whole second so
        that a million peers touched in the same second share one timestamp object."""
        if self.second_start <= now < self.second_end:
            return self.second
        t = self.second = int(now)
        self.second_start = float(t) if now >= 0 else now
        self.second_end = self.second_start + 1.0 if now >= 0 else now
        return t

    def get(self, key: bytes) -> Peer | None:
        """Find without creating (R4)."""
        p = self.recent.get(key)
        if p is None:
            p = self.old.pop(key, None)
            if p is not None:
                self.recent[key] = p
        return p

    def create(self, key: bytes, mapping: tuple[str, int], t: int) -> Peer | None:
        """Create an entry (caller checked it is missing); ``None`` when the table is full."""
        if len(self.recent) + len(self.old) >= self.capacity:
            self.dropped_full += 1
            return None
        p = Peer(mapping, t)
        self.recent[key] = p
        return p

    def clear(self) -> None:
        """Forget every peer (client: on every InterfaceUp).  The released dicts are freed
        incrementally like an expired generation."""
        for d in (self.old, self.recent):
            if d:
                self.dying.append(d)
        self.recent = {}
        self.old = {}

    # -- garbage collection -------------------------------------------------------------------

    def gc_step(self, now: float) -> int:
        """Advance the generations if due and free at most ``gc_slice`` dying entries.

        Returns the number of entries freed.  Call it from the role's timer; it does bounded
        work however large the table is.
        """
        if self._next_swap is None:
            self._next_swap = now + self.generation
        elif now >= self._next_swap:
            if self.old:
                self.dying.append(self.old)
            self.old = self.recent
            self.recent = {}
            # Catch up after a long pause without swapping several times in one call: one swap
            # per call, the next one a full generation later.
            self._next_swap = now + self.generation
        freed = 0
        budget = self.gc_slice
        dying = self.dying
        while dying and freed < budget:
            d = dying[0]
            n = min(budget - freed, len(d))
            popitem = d.popitem
            for _ in range(n):
                popitem()
            freed += n
            if not d:
                dying.popleft()
        return freed

    def next_gc(self) -> float | None:
        """When gc_step wants to run next: at once (0.0) while memory is still being released or
        before the first call has armed the generation clock, else at the next swap."""
        if self.dying or self._next_swap is None:
            return 0.0
        return self._next_swap

    def counts(self) -> dict[str, int]:
        trusted = 0
        for d in (self.recent, self.old):
            for p in d.values():
                if p.trusted:
                    trusted += 1
        return {"count": len(self), "trusted": trusted}

    def listing(self, now: float, limit: int) -> list[dict[str, Any]]:
        """At most `limit` peers, the current generation first, for the `peers` status command.

        Bounded because the status answer is written while the packet path waits, and a relay
        may hold a million peers.  Times stay on the caller's monotonic clock (the runtime
        converts them); a peer that was never sent to or heard from directly has no mapping.
        """
        t = self.tick(now)
        out: list[dict[str, Any]] = []
        for d in (self.recent, self.old):
            for key, p in d.items():
                if len(out) >= limit:
                    return out
                out.append(p.describe(key, t))
        return out
