"""A small epoll loop: readers, a timer heap, one "deadline source", one after-batch hook.

Chosen over asyncio for the hot path: a readiness event costs one dict lookup and one call,
the callbacks drain their descriptor in a bounded batch themselves, and the role's outputs
are flushed once per wake-up (`after_batch`), not once per packet.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from collections.abc import Callable

Callback = Callable[[], None]


class Timer:
    """A handle returned by `Loop.call_at`; `cancel()` makes it a no-op."""

    __slots__ = ("active", "callback", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.active = True

    def cancel(self) -> None:
        self.active = False


class Loop:
    """Level-triggered epoll over file descriptors, with monotonic timers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._ep = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self.after_batch: Callback | None = None
        self._deadline_next: Callable[[], float | None] | None = None
        self._deadline_fire: Callable[[float], None] | None = None

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._readers[fd] = callback
        self._ep.register(fd, select.EPOLLIN)

    def add_writer(self, fd: int, callback: Callback) -> None:
        """Call `callback` while `fd` can take more bytes (EPOLLOUT).

        For the rare writer that must not block the loop (a status client that reads its
        answer slowly); `remove_reader` removes it.  One callback per descriptor: a reader of
        the same `fd` must be removed first.
        """
        self._readers[fd] = callback
        self._ep.register(fd, select.EPOLLOUT)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def call_at(self, when: float, callback: Callback) -> Timer:
        t = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), t))
        return t

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.clock() + delay, callback)

    def set_deadline_source(
        self, next_deadline: Callable[[], float | None], fire: Callable[[float], None]
    ) -> None:
        """Poll `next_deadline()` each turn and call `fire(now)` once it has passed.

        This is how a role's single `next_timer()` / `handle_timer(now)` pair plugs in without
        pushing a heap entry every time the role re-arms.
        """
        self._deadline_next = next_deadline
        self._deadline_fire = fire

    def stop(self) -> None:
        self._running = False

    def _timeout(self, now: float) -> float:
        when: float | None = None
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        if heap:
            when = heap[0][0]
        if self._deadline_next is not None:
            d = self._deadline_next()
            if d is not None and (when is None or d < when):
                when = d
        if when is None:
            return -1.0
        return max(0.0, when - now)

    def run_once(self, max_wait: float | None = None) -> None:
        """One wake-up: wait, dispatch ready descriptors, fire due timers, flush."""
        now = self.clock()
        timeout = self._timeout(now)
        if max_wait is not None and (timeout < 0 or timeout > max_wait):
            timeout = max_wait
        self._dispatch(self._ep.poll(timeout))
        self._fire_due()
        if self.after_batch is not None:
            self.after_batch()

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        readers = self._readers
        for fd, _mask in events:
            cb = readers.get(fd)
            if cb is not None:
                cb()

    def _fire_due(self) -> float | None:
        """Fire due heap timers and the deadline source; return the source's next deadline."""
        now = self.clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _when, _seq, t = heapq.heappop(heap)
            if t.active:
                t.active = False
                t.callback()
        nxt = self._deadline_next
        if nxt is None:
            return None
        d = nxt()
        if d is not None and d <= now and self._deadline_fire is not None:
            self._deadline_fire(now)
            d = nxt()
        return d

    def run(self) -> None:
        """`run_once` until `stop()`, with the bookkeeping a wake-up costs cut to the bone.

        Every wake-up of an idle relay is one forwarded packet, so what the loop does around
        the callbacks is added to the tunnel's round-trip time.  Here the deadline source is
        asked once per wake-up (after the callbacks, which are the only code that re-arms
        it) instead of once before and once after the wait, and attribute look-ups are bound
        to locals.  The order of work is exactly `run_once`'s.
        """
        self._running = True
        poll = self._ep.poll
        clock = self.clock
        readers = self._readers
        fire_due = self._fire_due
        heap = self._heap
        d = self._deadline_next() if self._deadline_next is not None else None
        while self._running:
            while heap and not heap[0][2].active:
                heapq.heappop(heap)
            when = heap[0][0] if heap else None
            if d is not None and (when is None or d < when):
                when = d
            if when is None:
                timeout = -1.0
            else:
                timeout = when - clock()
                if timeout < 0.0:
                    timeout = 0.0
            for fd, _mask in poll(timeout):
                cb = readers.get(fd)
                if cb is not None:
                    cb()
            d = fire_due()
            after = self.after_batch
            if after is not None:
                after()

    def close(self) -> None:
        self._ep.close()
        self._readers.clear()
        self._heap.clear()
