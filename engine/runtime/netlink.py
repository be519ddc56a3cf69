"""A client's interface configuration and host-change watching over rtnetlink.

What a miredo client's hook does with ``ip`` (addresses, MTU, link state, the last-resort
default route), done here from the privileged parent only, always on the one interface index
the parent created.  No process is spawned.  The same parent watches the host: its IPv4
addresses and links (a client re-qualifies when they change), and lists them for local
discovery; the worker only receives the results.  A relay's counterpart is
`engine.runtime.relay_link`.

The messages are `rtnl_min`'s: pyroute2's rtnetlink message classes over a socket of our
own. This module used pyroute2's `IPRoute`, imported by a client's parent after its first
address (0.1-0.3 s of import); the import and what it allocated after the fork made the
client's parent about 14 MiB private and unshared most of the worker's inherited pages too
(a just-qualified client's tree: 30 MiB of PSS against 12 for a relay without it;
docs/performance.md, "Idle memory"). The requests are the same, and so are the error
messages (`NetlinkConfigError`, naming the change and the kernel's errno); the kernel tests
compare the link's state.

Every configuration change opens a short-lived socket: changes are rare (qualification,
reload, exit), and a closed socket carries no state into a later worker fork.
"""

from __future__ import annotations

import errno
import socket
from collections import namedtuple

from engine.proto.addr import LL_CLIENT
from engine.runtime import rtnl_min
from engine.runtime.interface import CLIENT_ROUTE_METRIC
from engine.runtime.rtnl_min import Rtnl, RtnlError

MAIN_TABLE = rtnl_min.RT_TABLE_MAIN
RTPROT_KERNEL = 2
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
_STATE_FLAGS = IFF_UP | IFF_RUNNING | IFF_LOWER_UP

NetlinkConfigError = RtnlError
"""An interface change failed; ``str()`` names the change and the kernel's reason.  An
`OSError`, so that callers handle it with the socket and file errors of the same set-up step."""


def flush(nl: Rtnl, index: int) -> None:
    """Remove every address and every main-table route of interface `index` (routes the
    kernel made for the addresses go with them)."""
    for addr in nl.addresses(socket.AF_UNSPEC, index):
        nl.delete_address(addr, ok_errnos=(errno.EADDRNOTAVAIL, errno.ENODEV))
    for family in (socket.AF_INET6, socket.AF_INET):
        for route in nl.routes(family, MAIN_TABLE):
            if route.oif != index or route.protocol == RTPROT_KERNEL:
                continue  # proto kernel: removed with the addresses/link
            nl.delete_route(route, ok_errnos=(errno.ESRCH, errno.ENODEV))


class TunnelInterface:
    """The one interface this instance owns, addressed by index (names can change)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.address: bytes | None = None
        self.mtu: int | None = None

    def client_up(self, address: bytes, mtu: int) -> None:
        """Teredo address /32, the fixed link-local /64, the MTU and ``::/0`` metric 1029.

        A changed address replaces the old one (the whole interface is flushed first), so
        addresses never pile up the way they do with miredo's BSD hook.
        """
        with Rtnl(self.name) as nl:
            flush(nl, self.index)
            nl.link_up(self.index, mtu)
            for a, plen in ((LL_CLIENT, 64), (address, 32)):
                nl.add_address6(self.index, a, plen)
            nl.add_route6(self.index, bytes(16), 0, CLIENT_ROUTE_METRIC,
                          what="add default route")
        self.address, self.mtu = address, mtu

    def client_down(self) -> None:
        """Addresses and routes gone, link down (what the hook does on STATE=down)."""
        with Rtnl(self.name) as nl:
            flush(nl, self.index)
            nl.link_down(self.index, ok_errnos=(errno.ENODEV,))
        self.address = None

    def teardown(self) -> None:
        """On exit: the link down; closing the TUN descriptor then deletes the link.

        No flush first: the device is not persistent (`tun.py`), so the kernel removes its
        addresses and routes with it, and down already takes them off at once. A flush costs
        two dumps of the namespace's whole route table, and N relays stopping together made
        `down --all` grow with N squared (12.5 s for 300 relays, docs/performance.md)."""
        try:
            with Rtnl(self.name) as nl:
                nl.link_down(self.index, ok_errnos=(errno.ENODEV,))
        except OSError:
            pass
        self.address = None


# -- reading the host's links and addresses --------------------------------------------------

class Link(namedtuple("Link", "index name flags")):
    __slots__ = ()
    index: int
    name: str
    flags: int


class Address(namedtuple("Address", "index address prefixlen")):
    __slots__ = ()
    index: int
    address: str
    prefixlen: int


def _ipv4_text(a: rtnl_min.Addr) -> str:
    """What the address attribute says (IFA_ADDRESS, the peer on a point-to-point link)."""
    raw = a.peer if a.peer is not None else a.address
    return socket.inet_ntop(socket.AF_INET, raw) if len(raw) == 4 else ""


def host_links_and_ipv4() -> tuple[list[Link], list[Address]]:
    """Every link and every IPv4 address of the namespace (local discovery's candidates)."""
    with Rtnl("host") as nl:
        links = [Link(link.index, link.name, link.flags) for link in nl.links()]
        addrs = [Address(a.index, _ipv4_text(a), a.prefixlen)
                 for a in nl.addresses(socket.AF_INET) if _ipv4_text(a)]
    return links, addrs


class AddressWatcher:
    """Host IPv4 address and link changes (a client re-qualifies at once).

    Only the fact of a change matters, so messages are read just far enough to ignore our
    own interface and link messages that do not change a link's up/running state.
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sub = rtnl_min.Subscription(rtnl_min.RTMGRP_LINK | rtnl_min.RTMGRP_IPV4_IFADDR)
        try:
            self._link_flags: dict[int, int] = {}
            with Rtnl("host") as nl:  # seed, so that the first unrelated NEWLINK is no change
                for link in nl.links():
                    self._link_flags[link.index] = link.flags & _STATE_FLAGS
        except BaseException:
            self.sub.close()
            raise

    def fileno(self) -> int:
        return self.sub.fileno()

    def close(self) -> None:
        self.sub.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop our copy of the socket (the parent keeps its own)."""
        self.sub.close()

    def drain(self) -> list[str]:
        """Read everything queued; return one short reason per relevant change."""
        reasons, lost = self.sub.read_decoded(self._relevant)
        return ["netlink overrun (notifications lost)", *reasons] if lost else reasons

    def _relevant(self, mtype: int, payload: bytes) -> str | None:
        if mtype in (rtnl_min.RTM_NEWADDR, rtnl_min.RTM_DELADDR):
            a = rtnl_min.parse_addr(mtype, payload)
            if a is None or a.index == self.own_index or a.family != socket.AF_INET:
                return None
            verb = "added" if mtype == rtnl_min.RTM_NEWADDR else "removed"
            return f"IPv4 address {_ipv4_text(a) or None} {verb} (ifindex {a.index})"
        link = rtnl_min.parse_link(mtype, payload)
        if link is None or link.index == self.own_index:
            return None
        if mtype == rtnl_min.RTM_DELLINK:
            self._link_flags.pop(link.index, None)
            return f"link {link.name or None} removed"
        flags = link.flags & _STATE_FLAGS
        old = self._link_flags.get(link.index)
        self._link_flags[link.index] = flags
        if old is None or old != flags:
            state = "up" if flags & IFF_RUNNING else "down"
            return f"link {link.name or None} {state}"
        return None
