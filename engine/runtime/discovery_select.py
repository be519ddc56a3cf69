"""Which host interfaces a client runs local discovery on (miredo's rule, spec §9).

The rule itself (`select_discovery`) is pure, so it is tested without a kernel; listing the
host's links and addresses is rtnetlink work, done by the privileged parent through
`engine.runtime.netlink`, which is imported only when a list is asked for (a client's parent
lists them after forking its worker).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.proto.addr import int_to_ipv4, is_global_unicast_ipv4
from engine.proto.role import DiscoveryInterface

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # only for the annotations
    from engine.runtime.netlink import Address, Link

IFF_MULTICAST = 0x1000


def prefixlen_netmask(prefixlen: int) -> str:
    """Dotted IPv4 netmask of a prefix length: the role compares peers against it."""
    if not 0 <= prefixlen <= 32:
        raise ValueError(f"not an IPv4 prefix length: {prefixlen}")
    return int_to_ipv4((0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF)


def select_discovery(links: Iterable[Link], addresses: Iterable[Address],
                     pattern: re.Pattern[str] | None) -> list[DiscoveryInterface]:
    """miredo's rule: every IPv4 address of a multicast-capable interface whose name matches
    `DiscoveryInterfaces` (unanchored); loopback excluded.  Whether global addresses count is
    the role's business (`LocalDiscovery forced`), not this list's."""
    by_index = {link.index: link for link in links}
    out: list[DiscoveryInterface] = []
    for addr in addresses:
        link = by_index.get(addr.index)
        if link is None or not link.flags & IFF_MULTICAST or addr.address.startswith("127."):
            continue
        if pattern is not None and not pattern.search(link.name):
            continue
        out.append((link.name, addr.address, prefixlen_netmask(addr.prefixlen)))
    return out


def qualifying(ifaces: Iterable[DiscoveryInterface],
               include_global: bool) -> list[DiscoveryInterface]:
    """The interfaces the client role will announce on: its own rule
    (`engine.proto.discovery`: a global IPv4 address counts only with `LocalDiscovery
    forced`).  The runtime opens UDP 3544 only when this is not empty: a discovery socket
    with no interface to serve would expose the whole receive path for nothing (issue 9
    flaw 4)."""
    return [i for i in ifaces if include_global or not is_global_unicast_ipv4(i[1])]


def list_discovery_interfaces(pattern: re.Pattern[str] | None) -> list[DiscoveryInterface]:
    """The host's discovery interfaces now; `OSError` when rtnetlink cannot be read.

    The first call imports `engine.runtime.netlink`.
    """
    from engine.runtime import netlink

    links, addresses = netlink.host_links_and_ipv4()
    return select_discovery(links, addresses, pattern)
