"""The worker's UPnP IGD mapping for RFC 6081 §3.2 (docs/protocol.md §13.8): get it, keep it,
give it back.

SSDP waits up to 2 s and every HTTP exchange up to 3 s, which the event loop must never do, so
a thread of its own does the talking (engine.runtime.upnp) and the loop only picks up the
outcome: the thread stores it and writes one byte to a pipe the loop reads, and the loop hands
it to the role (`set_upnp_mapping`), so the role is only ever touched from the loop's thread.

The thread is a `_thread` one: `threading` (with `_weakrefset`) is about 0.2 MiB in a client's
worker, for an Event, a Lock and a join that three `_thread` locks do as well
(docs/performance.md, "The UPnP client without http.client").

Timing (engine choices): lease `LEASE` seconds, renewed at half of it; after a failure the
next try comes `RETRY` seconds later.  `stop()` (worker shutdown) deletes the mapping, bounded
(see there); a worker killed outright leaves it to the lease.
"""

from __future__ import annotations

import _thread
import os
from collections.abc import Callable

from engine.runtime import upnp

LEASE = 600
RETRY = 60.0
STOP_JOIN = 1.5
DESCRIPTION = "teredo-engine (RFC 6081)"

Result = tuple[tuple[str, int, int] | None, str]


class UpnpKeeper:
    """One mapping of `port` on the IGD that answers on the LAN of `lan_ip`."""

    def __init__(self, lan_ip: str, port: int, *, lease: int = LEASE, retry: float = RETRY,
                 acquire: Callable[..., tuple[upnp.Igd, upnp.Mapping]] = upnp.acquire,
                 add: Callable[..., upnp.Mapping] = upnp.add_mapping,
                 delete: Callable[[upnp.Igd, upnp.Mapping], None] = upnp.delete_mapping,
                 ) -> None:
        self.lan_ip = lan_ip
        self.port = port
        self.lease = lease
        self.retry = retry
        self._acquire, self._add, self._delete = acquire, add, delete
        self._stopping = False
        self._wake = _thread.allocate_lock()  # held until stop(): a wait on it ends at once
        self._wake.acquire()
        self._done = _thread.allocate_lock()  # held by the thread while it runs
        self._lock = _thread.allocate_lock()  # guards _result, and the pipe against stop()
        self._started = False
        self._result: Result | None = None
        self._igd: upnp.Igd | None = None
        self._mapping: upnp.Mapping | None = None
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

    def fileno(self) -> int:
        """Readable when a new outcome waits in `take()`."""
        return self._rfd

    def start(self) -> None:
        self._done.acquire()
        self._started = True
        _thread.start_new_thread(self._main, ())

    def take(self) -> Result | None:
        """The newest outcome (mapping or None, and why not), once; called on the loop."""
        try:
            os.read(self._rfd, 64)
        except BlockingIOError:
            pass
        with self._lock:
            result, self._result = self._result, None
        return result

    def _publish(self, result: Result) -> None:
        """Under the lock, and never once stop() has begun: stop() closes the pipe, and a
        thread left busy would otherwise write into whatever file then reuses its number."""
        with self._lock:
            if self._stopping:
                return
            self._result = result
            try:
                os.write(self._wfd, b"!")
            except OSError:
                pass  # full: the loop reads the newest result anyway

    def _main(self) -> None:
        try:
            self._run()
        finally:
            self._done.release()

    def _run(self) -> None:
        while not self._stopping:
            try:
                if self._igd is None:
                    self._igd, self._mapping = self._acquire(
                        self.lan_ip, self.port, self.lease, DESCRIPTION)
                else:
                    self._mapping = self._add(self._igd, self.port, self.lease, DESCRIPTION)
                m = self._mapping
                self._publish(((m.external_ip, m.external_port, m.lease), ""))
                wait = self.lease / 2
            except upnp.UpnpError as e:
                self._igd = self._mapping = None
                self._publish((None, str(e)))
                wait = self.retry
            except Exception as e:  # a bug here must not end the thread silently
                self._igd = self._mapping = None
                self._publish((None, f"internal error: {e!r}"))
                wait = self.retry
            self._wake.acquire(timeout=wait)  # True only once stop() has released it

    def stop(self) -> None:
        """End the thread and delete the mapping it holds (worker shutdown).

        Bounded to fit the parent's wait for a stopping worker (5 s, engine.runtime.parent):
        1.5 s for the thread to finish what it does, then one DeletePortMapping (3 s at
        most); a thread still busy (an IGD that answers slowly) is left, and the lease ends
        whatever it mapped."""
        with self._lock:
            self._stopping = True
        self._wake.release()
        finished = not self._started or self._done.acquire(timeout=STOP_JOIN)
        igd, mapping = self._igd, self._mapping
        if igd is not None and mapping is not None and finished:
            try:
                self._delete(igd, mapping)
            except upnp.UpnpError:
                pass  # the lease ends it
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
