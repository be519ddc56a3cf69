"""The worker's end of the host-facts channel: what the parent learnt from rtnetlink.

The privileged parent alone talks rtnetlink (through pyroute2, which the worker never
imports); facts about the host that the role needs arrive here, one JSON line each
(`channel.parse_host_fact`), on the control socket next to the parent's other messages:

* ``icmp_sources`` -- a relay's ICMPv6 errors need a routable source, one of the host's
  global IPv6 addresses, kept current by the parent (`netlink.SourceAddressWatcher`);
* ``discovery`` -- local discovery's interfaces, which a client's parent lists only after it
  forked the worker (so the first Router Solicitation does not wait for pyroute2's import).
"""

from __future__ import annotations

from typing import Any

from engine.runtime import channel
from engine.runtime.logsetup import get_logger

log = get_logger()


def handle(worker: Any, line: bytes) -> None:
    """One host-fact line from the control socket: checked, then applied to `worker`'s role;
    a refused fact is logged and skipped."""
    try:
        fact = channel.parse_host_fact(line)
    except channel.RequestError as e:
        log.error("host facts: %s", e)
        return
    role = worker.role
    if isinstance(fact, channel.IcmpSources):
        setter = getattr(role, "set_icmp_sources", None)
        if setter is not None:
            setter(list(fact.addresses))
    elif isinstance(fact, channel.DiscoveryInterfaces):
        had = bool(worker.res.discovery)
        worker.set_discovery([tuple(x) for x in fact.interfaces])
        if not had and fact.interfaces:
            announce_now(role, worker.clock())


def announce_now(role: Any, now: float) -> None:
    """A client announces itself on the LAN when it qualifies (miredo: at once, then every
    200-299 s).  Its first interface list can arrive after that (the parent was still
    importing pyroute2), and that announcement then found no interface; restart the round so
    it goes out now instead of minutes later.  A role without discovery is left alone."""
    discovery = getattr(role, "discovery", None)
    if discovery is not None and getattr(role, "up", False) and hasattr(discovery, "start"):
        discovery.start(now)
