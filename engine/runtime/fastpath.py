"""Which loop drives the worker: the compiled relay data path or the pure-Python reference.

The Python loop (`engine.runtime.loop.Loop`) stays the reference: every rule of the data path
lives in `engine.proto`, and the C module (`engine/runtime/_fastloop.c`) only takes the
packets the Python hot path of `TeredoTunnel.receive_tun_packet` / `receive_datagram` would
take, doing exactly what that hot path does; everything else goes to those Python methods.
Why it exists: a wake-up of CPython costs 20-22 us however little it does, against 5 us in C
(docs/performance.md, "Compiled fast path").

``TEREDO_FASTPATH=0`` forces the Python loop; otherwise the C loop runs when the module is
built and the role is one whose hot path it reproduces (the relay).  A client keeps the
Python loop: its `receive_tun_packet`, `receive_datagram`, `_tx_open` and `_tx_src_ok` add
qualification, ping tests and RFC 6081 rules the C path does not reproduce.
"""

from __future__ import annotations

import heapq
import os
import socket
import time
from collections.abc import Callable

from engine.proto import peers
from engine.runtime.logsetup import get_logger
from engine.runtime.loop import Loop

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any

    from engine.runtime.worker import Worker

try:
    from engine.runtime import _fastloop  # type: ignore[attr-defined]
except ImportError as _e:  # not built (a source tree without build_ext)
    _fastloop = None
    IMPORT_ERROR: str | None = str(_e)
else:
    IMPORT_ERROR = None

ENV = "TEREDO_FASTPATH"
COMPILED = "compiled"
PYTHON = "python"
HOT_METHODS = ("receive_tun_packet", "receive_datagram", "_tx_open", "_tx_src_ok")
"""The methods whose hot path the C module reproduces: a role overriding any keeps Python."""

log = get_logger()


def available() -> bool:
    """Whether the C module is importable (built for this interpreter)."""
    return _fastloop is not None


def wanted() -> bool:
    """The operator's choice: anything but ``TEREDO_FASTPATH=0`` means "when possible"."""
    return os.environ.get(ENV, "1").strip() != "0"


if _fastloop is not None and wanted():
    # a peer never forms a cycle: keep the peer table out of full collections
    # (engine.proto.peers.Peer; docs/performance.md, "Peers out of the collector's sight")
    peers.set_untrack(_fastloop.untrack)


def describe() -> str:
    """One line for ``-V`` and the start-up log: what this build and environment would run."""
    if not wanted():
        return f"data path: python ({ENV}=0)"
    if not available():
        return f"data path: python (compiled module not built: {IMPORT_ERROR})"
    return "data path: compiled for the relay (engine.runtime._fastloop), python otherwise"


def new_loop(clock: Callable[[], float]) -> Loop:
    """The loop a worker starts with: a `FastLoop` when the compiled path may be used."""
    if wanted() and available() and clock is time.monotonic:
        return FastLoop(clock)
    return Loop(clock)


def role_has_hot_path(role: object) -> bool:
    """True for a tunnel role that overrides none of the methods the C path reproduces."""
    from engine.proto.tunnel import TeredoTunnel  # a server's worker never needs it

    cls = type(role)
    return isinstance(role, TeredoTunnel) and all(
        getattr(cls, name) is getattr(TeredoTunnel, name) for name in HOT_METHODS)


class FastLoop(Loop):
    """`Loop` whose `run` is the C loop once `bind` found descriptors it can serve."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._spec: tuple[Any, ...] | None = None
        self._worker: Worker | None = None

    def bind(self, worker: Worker) -> str:
        """Take the worker's TUN and IPv4 UDP readers into the C path; the path that runs."""
        from engine.proto.peers import VALID_SECONDS

        role = worker.role
        tun_fd = worker.res.tun_fd
        if tun_fd is None or not role_has_hot_path(role) or not worker._udp:
            return PYTHON
        out = worker._udp[0]
        if out is None or out.family != socket.AF_INET:
            return PYTHON
        udps = []
        for idx, sock in enumerate(worker._udp):
            if sock is not None and sock.family == socket.AF_INET:
                fd = sock.fileno()
                udps.append((fd, idx, self._readers[fd]))
        self._worker = worker
        self._spec = (worker, role, tun_fd, self._readers[tun_fd], udps, out.fileno(),
                      VALID_SECONDS, self._ep.fileno(), self._readers)
        return COMPILED

    def run(self) -> None:
        if self._spec is None or _fastloop is None:
            super().run()
            return
        self._running = True
        _fastloop.run(self, self._spec)

    # -- called by the C loop, only after Python code ran or a deadline passed -------------

    def _fast_when(self, d: float | None) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        when = heap[0][0] if heap else None
        if d is not None and (when is None or d < when):
            when = d
        return None if when is None else float(when)

    def _fast_start(self) -> float | None:
        d = self._deadline_next() if self._deadline_next is not None else None
        return self._fast_when(d)

    def _fast_turn(self) -> float | None:
        """What `Loop.run` does after the callbacks of a wake-up: timers, flush, deadline."""
        d = self._fire_due()
        after = self.after_batch
        if after is not None:
            after()
        return self._fast_when(d)

    def _fast_gso_refused(self, err: int) -> None:
        if self._worker is not None:
            self._worker._gso = False
        log.info("UDP GSO refused (%s); sending datagrams one by one", os.strerror(err))
