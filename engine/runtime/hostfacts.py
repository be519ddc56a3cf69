"""The worker's end of the host-facts channel: what the parent learnt from rtnetlink.

The privileged parent alone talks rtnetlink (through pyroute2, which the worker never
imports); facts about the host that the role needs arrive here, one JSON line each
(`channel.parse_host_fact`), on a socket pair of their own next to the control socket:

* ``icmp_sources`` -- a relay's ICMPv6 errors need a routable source, one of the host's
  global IPv6 addresses, kept current by the parent (`netlink.SourceAddressWatcher`);
* ``discovery`` -- local discovery's interfaces, which a client's parent lists only after it
  forked the worker (so the first Router Solicitation does not wait for pyroute2's import).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from engine.runtime import channel
from engine.runtime.logsetup import get_logger

log = get_logger()


class HostFacts:
    """Reads facts from `sock` in the worker's loop and hands them to `worker`'s role."""

    def __init__(self, worker: Any, sock: socket.socket,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self.sock = sock
        self.clock = clock
        self.buf = channel.LineBuffer(limit=channel.MAX_FACT_LINE)
        sock.setblocking(False)
        worker.loop.add_reader(sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(channel.MAX_FACT_LINE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the parent is gone; the control socket tells the worker to stop
            self.worker.loop.remove_reader(self.sock.fileno())
            return
        try:
            lines = self.buf.feed(data)
        except channel.RequestError as e:
            log.error("host facts: %s", e)
            return
        for line in lines:
            try:
                self.apply(channel.parse_host_fact(line))
            except channel.RequestError as e:
                log.error("host facts: %s", e)

    def apply(self, fact: channel.HostFact) -> None:
        role = self.worker.role
        if isinstance(fact, channel.IcmpSources):
            setter = getattr(role, "set_icmp_sources", None)
            if setter is not None:
                setter(list(fact.addresses))
        elif isinstance(fact, channel.DiscoveryInterfaces):
            had = bool(self.worker.res.discovery)
            self.worker.set_discovery([tuple(x) for x in fact.interfaces])
            if not had and fact.interfaces:
                announce_now(role, self.clock())


def announce_now(role: Any, now: float) -> None:
    """A client announces itself on the LAN when it qualifies (miredo: at once, then every
    200-299 s).  Its first interface list can arrive after that (the parent was still
    importing pyroute2), and that announcement then found no interface; restart the round so
    it goes out now instead of minutes later.  A role without discovery is left alone."""
    discovery = getattr(role, "discovery", None)
    if discovery is not None and getattr(role, "up", False) and hasattr(discovery, "start"):
        discovery.start(now)
