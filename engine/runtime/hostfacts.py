"""The worker's end of the host-facts channel: what the parent learnt from rtnetlink.

The privileged parent alone talks rtnetlink (`rtnl_min`, pyroute2's message classes; the
worker inherits them loaded but never uses them); facts about the host that the role needs
arrive here, one JSON line each (`channel.parse_host_fact`), on the control socket next to
the parent's other messages:

* ``icmp_sources`` -- a relay's ICMPv6 errors need a routable source, one of the host's
  global IPv6 addresses, kept current by the parent (`relay_link.SourceAddressWatcher`);
* ``discovery`` -- local discovery's interfaces, which a client's parent lists only after it
  forked the worker (so the first Router Solicitation does not wait for its dumps).
"""

from __future__ import annotations

from engine.runtime import channel
from engine.runtime.logsetup import get_logger

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # the worker imports this module
    from engine.runtime.worker import Worker

log = get_logger()


def handle(worker: Worker, line: bytes) -> None:
    """One host-fact line from the control socket: checked, then applied to `worker`'s role;
    a refused fact is logged and skipped."""
    try:
        fact = channel.parse_host_fact(line)
    except channel.RequestError as e:
        log.error("host facts: %s", e)
        return
    if isinstance(fact, channel.IcmpSources):
        worker.role.set_icmp_sources(list(fact.addresses))
    elif isinstance(fact, channel.DiscoveryInterfaces):
        had = bool(worker.res.discovery)
        worker.set_discovery(list(fact.interfaces))
        if not had and fact.interfaces:
            # the first list: the announcement made when the client qualified found no
            # interface, so the round restarts now rather than in 200-299 s
            worker.role.restart_discovery(worker.clock())
