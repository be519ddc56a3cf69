"""The Teredo peer table shared by the client and the relay (spec §5.1–§5.4).

Why it looks the way it does:

* A busy public relay keeps one entry per Teredo client it talks to, so a million entries must
  fit in a few hundred MB.  ``Peer`` is a ``__slots__`` record; timestamps are whole seconds and
  the same ``int`` object is shared by every peer touched in the same second (the table hands
  out one cached tick object per second).  A relay trusts a Teredo peer only at the mapping
  written in its address (R9a, docs/protocol.md), so for almost every relay peer the
  ``(ip, port)`` tuple would repeat what the 16-byte key already says: a peer keeps its key
  (the same bytes object the dict holds) and stores a mapping only when it differs from the
  one the key carries (a client's native peers behind relays, local peers, RFC 6081
  endpoints).  Without the tuple, its address string and its port int an entry costs about
  235 bytes instead of 380 (docs/performance.md, "The peer table").
  ``tests/unit/test_peer_table_scale.py`` measures the result.
* Every lookup is a dict access keyed by the 16-byte IPv6 address.
* Expiry is miredo's two-generation scheme (an idle entry lives between E and 2E seconds), but
  the old generation is released *incrementally*: at a generation swap the old dict is put on a
  "dying" list and freed ``gc_slice`` entries per :meth:`PeerTable.gc_step` call, so a relay
  with a million idle peers never stalls forwarding for a full sweep.
* The per-peer queue is FIFO (miredo's is LIFO, which reorders packets; spec §12.2 #8).  It
  is a plain ``list`` created on the first packet: a ``collections.deque`` costs about 770
  bytes even holding one packet, a list about 100 (issue 9, flaw 2).
* The table is bounded by a **byte budget** as well as by count (docs/security.md): every
  entry is charged an estimate of what it holds in memory (:func:`peer_cost`: a fixed
  ``ENTRY_COST``, plus the queue and its packets), dying generations stay charged until they
  are freed, and the total never exceeds ``memory_limit``.  A new entry that does not fit
  first frees dying entries, then evicts *pending* entries (never trusted, not local: the
  ones anybody can create by sending to or from a new address), oldest first; trusted and
  local peers are never evicted to make room (they expire through the generations as
  before).  When nothing can be evicted the new entry is refused.  The estimates are upper
  bounds measured with tracemalloc (``tests/unit/test_peer_budget.py``).
* Pending entries are kept in creation order in a FIFO of ``(key, peer, created)`` records
  (charged ``RECORD_COST`` each; a record whose peer became trusted or left the table is
  skipped and trimmed lazily), which makes "the oldest pending entry" an O(1) question.  The
  same FIFO gives pending entries an optional maximum age (``pending_lifetime``): the
  client's never-confirmed entries (e.g. one per native source that spoofs its server) go
  after 60 s instead of living 600-1200 s.

Nothing here reads a clock: every method takes the caller's ``now`` (float seconds on a
monotonic clock) and applies miredo's whole-second rules to ``int(now)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .addr import ipv6_text, mapping_of

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any, Literal

    #: Why `PeerTable.create` refused an entry (the tunnel counts it as a drop reason).
    FullReason = Literal["peer_table_full", "peer_budget_full"]

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

#: Byte budgets (`PeerMemoryLimit`): a relay serves many clients; a client talks to a few
#: peers, and its table is what a spoofer of its server fills, so its budget is far smaller.
RELAY_MEMORY_LIMIT = 128 << 20
CLIENT_MEMORY_LIMIT = 4 << 20
#: Bounds of `PeerMemoryLimit` (also checked here for direct callers).
MIN_MEMORY_LIMIT = 64 << 10
MAX_MEMORY_LIMIT = 64 << 30
#: A never-confirmed client entry is dropped after this many seconds (the relay's keep the
#: generations' 30-60 s): long enough for four ping tests or bubbles 2 s apart and their
#: answers, short of the 600-1200 s a client generation would keep a spoofer's entry.
CLIENT_PENDING_LIFETIME = 60

# Memory estimates, in bytes, of what each part of an entry costs on CPython 3.11 (64-bit),
# upper bounds of what tracemalloc measures (tests/unit/test_peer_budget.py checks them):
#: one entry: the Peer record, its 16-byte key and its share of the two generation dicts; a
#: mapping the key carries costs nothing more (see `Peer.mapping`).
ENTRY_COST = 240
#: a mapping stored beside the key: the (ip, port) tuple, its address string and port int
#: (`NO_MAPPING` itself is shared and costs nothing).
MAPPING_COST = 176
#: one pending-FIFO record: three deque slots.
RECORD_COST = 32
#: a queue: the list object and its first slots.
QUEUE_COST = 128
#: one queued packet beyond its length: the (packet, source) tuple, the bytes header, a slot.
PACKET_COST = 112
#: the UDP source kept with an incoming queued packet: tuple, address string, port int.
SOURCE_COST = 176

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


#: Takes an object out of the cyclic collector's sight (CPython's ``PyObject_GC_UnTrack``);
#: set by the runtime (`engine.runtime.fastpath`, from the compiled module), else peers
#: stay tracked, which changes nothing but the length of a full collection.
_untrack: Callable[[object], object] | None = None


def set_untrack(untrack: Callable[[object], object] | None) -> None:
    """Have `PeerTable.create` and `Peer.enqueue` untrack every new peer and queue list with
    `untrack` (None: stop)."""
    global _untrack
    _untrack = untrack


class Peer:
    """One peer (§5.1).  ``mapping`` is the UDP endpoint, ``(ip, port)``; ``queue`` is ``None``
    until something is queued, then a ``list`` of ``(packet, udp_source_or_None)`` -- the UDP
    source is kept for incoming packets so the flush can deliver only those that came from the
    mapping finally trusted.

    A peer can never be part of a reference cycle: its slots hold bytes, ints, bools, a
    ``(str, int)`` tuple and a list of ``(bytes, tuple or None)`` pairs, nothing that can
    refer back to it (``tests/unit/test_peers_untracked.py`` walks them).  So the cyclic
    collector has nothing to find in it or in its queue, and `PeerTable.create` and
    `enqueue` take both out of its sight when the runtime gives them a way (`set_untrack`):
    a relay under a flood holds 100,000 pending peers with a queued packet each, and a full
    collection over them stalled the worker for 14-30 ms (docs/performance.md, "Peers out
    of the collector's sight").  A peer and its queue are still freed the moment nothing
    holds them.

    ``key`` is the peer's 16-byte IPv6 address, the very object its table is keyed by.
    ``_mapping`` is ``None`` while the mapping is the one that address carries (every peer a
    relay trusts, R9a), else the endpoint itself (`NO_MAPPING` is stored as that shared
    object).  The compiled relay loop reads ``_mapping`` directly (engine/runtime/_fastloop.c)
    and builds the destination from the key's bytes when it is ``None``.  The derived tuple is
    never cached here: that would bring back the memory for every active peer.
    """

    __slots__ = (
        "_mapping",
        "bubbles",
        "key",
        "last_ping",
        "last_rx",
        "last_tx",
        "local",
        "pings",
        "queue",
        "queue_left",
        "trusted",
    )

    def __init__(self, key: bytes, mapping: tuple[str, int] | None, t: int) -> None:
        self.key = key
        if mapping is None:
            self._mapping = None
        else:
            self.mapping = mapping
        self.trusted = False
        self.local = False
        self.bubbles = 0
        self.pings = 0
        # miredo leaves these uninitialised (§12.2 #23); we start them at creation time.
        self.last_rx = t
        self.last_tx = t
        self.last_ping = t
        self.queue: list[tuple[bytes, tuple[str, int] | None]] | None = None
        self.queue_left = MAXQUEUE

    @property
    def mapping(self) -> tuple[str, int]:
        """The peer's UDP endpoint: derived from the key when none is stored (a pure function
        of the key, so right for any key, Teredo or not)."""
        m = self._mapping
        return mapping_of(self.key) if m is None else m

    @mapping.setter
    def mapping(self, m: tuple[str, int]) -> None:
        # A peer in a table changes its mapping through `PeerTable.remap`, which keeps the
        # byte budget exact when a stored mapping appears or goes.
        if m == mapping_of(self.key):
            self._mapping = None
        elif m == NO_MAPPING:
            self._mapping = NO_MAPPING
        else:
            self._mapping = m

    @property
    def stores_mapping(self) -> bool:
        """Whether the entry holds a mapping object of its own (charged `MAPPING_COST`)."""
        m = self._mapping
        return m is not None and m is not NO_MAPPING

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
            q = self.queue = []
            if _untrack is not None:  # holds (bytes, tuple) pairs only: no cycle either
                _untrack(q)
        q.append((pkt, src))
        return True

    def describe(self, key: bytes, t: int) -> dict[str, Any]:
        """One row of the `peers` status command (docs/contracts.md §4)."""
        q = self.queue
        state = ("reachable" if self.valid(t) else "stale") if self.trusted else "pending"
        m = self.mapping
        return {
            "address": ipv6_text(key),
            "mapping": None if m == NO_MAPPING else {"ip": m[0], "port": m[1]},
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

    def take_queue(self, t: int) -> list[tuple[bytes, tuple[str, int] | None]] | None:
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


def queue_cost(q: list[tuple[bytes, tuple[str, int] | None]] | None) -> int:
    """Estimated bytes held by a peer's queue (at most a few dozen packets: 1280 bytes)."""
    if q is None:
        return 0
    n = QUEUE_COST
    for pkt, src in q:
        n += PACKET_COST + len(pkt)
        if src is not None:
            n += SOURCE_COST
    return n


def packet_cost(pkt: bytes, src: tuple[str, int] | None) -> int:
    """What queueing one more packet adds to an entry's estimate."""
    return PACKET_COST + len(pkt) + (0 if src is None else SOURCE_COST)


def peer_cost(p: Peer) -> int:
    """Estimated bytes held by one entry, stored mapping and queue included."""
    q = p.queue
    m = p._mapping
    n = ENTRY_COST if m is None or m is NO_MAPPING else ENTRY_COST + MAPPING_COST
    return n if q is None else n + queue_cost(q)


class PeerTable:
    """Bounded, two-generation peer table keyed by the 16-byte IPv6 address.

    The roles pass their byte budget (``memory_limit``); the default, the largest
    `PeerMemoryLimit` accepted, leaves a table built directly (tests, benchmarks) bounded by
    its count alone.

    ``recent`` is exposed so that the hot path can try one ``dict.get`` before calling
    :meth:`get`; an entry found in ``old`` is moved back to ``recent`` (miredo: any lookup
    refreshes the entry).
    """

    __slots__ = (
        "_next_swap",
        "capacity",
        "dropped_full",
        "dying",
        "evicted",
        "expired_pending",
        "full_reason",
        "gc_slice",
        "generation",
        "memory_limit",
        "old",
        "pending",
        "pending_lifetime",
        "recent",
        "refused_budget",
        "second",
        "second_end",
        "second_start",
        "used",
    )

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        generation: int = RELAY_GENERATION,
        gc_slice: int = DEFAULT_GC_SLICE,
        memory_limit: int = MAX_MEMORY_LIMIT,
        pending_lifetime: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"peers: capacity must be at least 1, got {capacity}")
        if generation < 1:
            raise ValueError(f"peers: generation must be at least 1 s, got {generation}")
        if gc_slice < 1:
            raise ValueError(f"peers: gc_slice must be at least 1, got {gc_slice}")
        if not MIN_MEMORY_LIMIT <= memory_limit <= MAX_MEMORY_LIMIT:
            raise ValueError(
                f"peers: memory_limit must be within {MIN_MEMORY_LIMIT}-{MAX_MEMORY_LIMIT} "
                f"bytes, got {memory_limit}"
            )
        if pending_lifetime is not None and pending_lifetime < 1:
            raise ValueError(f"peers: pending_lifetime must be at least 1 s, got "
                             f"{pending_lifetime}")
        self.capacity = capacity
        self.generation = generation
        self.gc_slice = gc_slice
        self.memory_limit = memory_limit
        self.pending_lifetime = pending_lifetime
        #: estimated bytes held by every entry still in memory (dying ones included) and by
        #: the pending FIFO; never above memory_limit
        self.used = 0
        #: (key, peer, created tick) of entries created pending, oldest first, flattened
        self.pending: deque[Any] = deque()
        #: pending entries evicted to make room, expired by pending_lifetime; creations
        #: refused because the budget was full of entries that may not be evicted
        self.evicted = 0
        self.expired_pending = 0
        self.refused_budget = 0
        #: why the last refused `create` was refused
        self.full_reason: FullReason = "peer_table_full"
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

    def create(
        self, key: bytes, mapping: tuple[str, int] | None, t: int, *, pending: bool = True
    ) -> Peer | None:
        """Create an entry (caller checked it is missing); ``None`` when the table is full
        (``full_reason`` says whether by count or by bytes).  ``mapping=None``: the one the
        key carries (what the relay's T4 creates), without building it.

        ``pending=False`` is for an entry trusted at once (the client's R9): it never goes on
        the pending FIFO, so it is never evicted.  A pending entry may evict older pending
        ones; a trusted one may too (the budget then holds one more verified peer).
        """
        if len(self.recent) + len(self.old) >= self.capacity:
            self.dropped_full += 1
            self.full_reason = "peer_table_full"
            return None
        p = Peer(key, mapping, t)
        if _untrack is not None:
            _untrack(p)
        need = ENTRY_COST + RECORD_COST if pending else ENTRY_COST
        if p.stores_mapping:
            need += MAPPING_COST
        if self.used + need > self.memory_limit and not self._make_room(need, None):
            self.dropped_full += 1
            self.refused_budget += 1
            self.full_reason = "peer_budget_full"
            return None
        self.recent[key] = p
        self.used += need
        if pending:
            q = self.pending
            if q:
                self._trim()
            q.append(key)
            q.append(p)
            q.append(t)
        return p

    def remap(self, p: Peer, mapping: tuple[str, int]) -> bool:
        """Set ``p.mapping`` (a peer of this table) within the byte budget: False, with the
        peer unchanged, when a mapping it must now store does not fit (``full_reason`` says
        so).  Going back to the key's own mapping gives the stored one's bytes back."""
        had = p.stores_mapping
        old = p._mapping
        p.mapping = mapping
        has = p.stores_mapping
        if has == had:
            return True
        if had:
            self.used -= MAPPING_COST
            return True
        if self.used + MAPPING_COST > self.memory_limit and not self._make_room(MAPPING_COST, p):
            p._mapping = old
            self.refused_budget += 1
            self.full_reason = "peer_budget_full"
            return False
        self.used += MAPPING_COST
        return True

    def enqueue(
        self, p: Peer, pkt: bytes, src: tuple[str, int] | None
    ) -> Literal["queue_full", "peer_budget_full"] | None:
        """Queue a packet on ``p`` within both budgets; the drop reason when refused."""
        if len(pkt) > p.queue_left:
            return "queue_full"
        need = packet_cost(pkt, src) + (QUEUE_COST if p.queue is None else 0)
        if self.used + need > self.memory_limit and not self._make_room(need, p):
            return "peer_budget_full"
        p.enqueue(pkt, src)
        self.used += need
        return None

    def take_queue(self, p: Peer, t: int) -> list[tuple[bytes, tuple[str, int] | None]] | None:
        """:meth:`Peer.take_queue`, releasing the queue's share of the budget."""
        q = p.take_queue(t)
        if q is not None:
            self.used -= queue_cost(q)
        return q

    def _make_room(self, need: int, keep: Peer | None) -> bool:
        """Bring ``used + need`` within the budget: free dying entries (already dead), then
        evict the oldest pending entries other than ``keep``.  Bounded work: each dying entry
        and each FIFO record is handled once in its life."""
        limit = self.memory_limit - need
        dying = self.dying
        while self.used > limit and dying:
            d = dying[0]
            self.used -= peer_cost(d.popitem()[1])
            if not d:
                dying.popleft()
        q = self.pending
        while self.used > limit and q:
            p = q[1]
            if p is keep:  # the oldest pending entry is the one asking: it gets no more
                break
            key = q.popleft()
            q.popleft()
            q.popleft()
            self.used -= RECORD_COST
            if not (p.trusted or p.local) and self._remove(key, p):
                self.evicted += 1
        return self.used <= limit

    def _trim(self) -> None:
        """Drop up to two FIFO records of entries no longer pending from the front: done on
        every creation, so records of verified peers do not pile up behind young ones."""
        q = self.pending
        for _ in range(2):
            if not q:
                return
            p = q[1]
            if not (p.trusted or p.local) and (self.recent.get(q[0]) is p
                                               or self.old.get(q[0]) is p):
                return
            q.popleft()
            q.popleft()
            q.popleft()
            self.used -= RECORD_COST

    def _remove(self, key: bytes, p: Peer) -> bool:
        """Drop ``p`` from whichever live generation holds it under ``key``."""
        for d in (self.old, self.recent):
            if d.get(key) is p:
                del d[key]
                self.used -= peer_cost(p)
                return True
        return False

    def _expire_pending(self, t: int, budget: int) -> int:
        """Trim the pending FIFO's front: skip records of entries that were verified or
        are gone, and drop pending entries older than ``pending_lifetime``.  Stops at the
        first entry still young and pending (the FIFO is in creation order)."""
        q = self.pending
        life = self.pending_lifetime
        recent, old = self.recent, self.old
        done = 0
        while q and done < budget:
            key, p = q[0], q[1]
            if not (p.trusted or p.local) and (recent.get(key) is p or old.get(key) is p):
                if life is None or t - q[2] < life:
                    break
                self._remove(key, p)
                self.expired_pending += 1
            q.popleft()
            q.popleft()
            q.popleft()
            self.used -= RECORD_COST
            done += 1
        return done

    def clear(self) -> None:
        """Forget every peer (client: on every InterfaceUp).  The released dicts are freed
        incrementally like an expired generation (and stay charged until they are)."""
        for d in (self.old, self.recent):
            if d:
                self.dying.append(d)
        self.recent = {}
        self.old = {}
        self.used -= RECORD_COST * (len(self.pending) // 3)
        self.pending.clear()

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
        released = 0
        while dying and freed < budget:
            d = dying[0]
            n = min(budget - freed, len(d))
            popitem = d.popitem
            for _ in range(n):
                released += peer_cost(popitem()[1])
            freed += n
            if not d:
                dying.popleft()
        self.used -= released
        if self.pending:
            self._expire_pending(self.tick(now), budget)
        return freed

    def next_gc(self) -> float | None:
        """When gc_step wants to run next: at once (0.0) while memory is still being released or
        before the first call has armed the generation clock, else at the next swap (or when
        the oldest pending entry reaches its maximum age, if that comes first)."""
        if self.dying or self._next_swap is None:
            return 0.0
        q = self.pending
        if q and self.pending_lifetime is not None:
            return min(self._next_swap, float(q[2] + self.pending_lifetime))
        return self._next_swap

    def counts(self) -> dict[str, int]:
        trusted = 0
        for d in (self.recent, self.old):
            for p in d.values():
                if p.trusted:
                    trusted += 1
        return {"count": len(self), "trusted": trusted}

    def memory(self) -> dict[str, int]:
        """The byte budget's use, for the status JSON (``peer_memory``, docs/contracts.md §4)."""
        return {
            "bytes": self.used,
            "limit": self.memory_limit,
            "pending": len(self.pending) // 3,
            "evicted": self.evicted,
            "expired_pending": self.expired_pending,
            "refused": self.refused_budget,
        }

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
