"""A relay's rtnetlink work: its interface's set-up and teardown, and the watch of the
host's global IPv6 addresses (the sources of its ICMPv6 errors).

A relay's parent needs little of rtnetlink: MTU and up, the fixed link-local, the Teredo
``Prefix/32`` route, the link down on exit, and one subscription.  Done through pyroute2's
`IPRoute`, that little cost the relay about 7 MiB of PSS (asyncio and 240 modules, shared by
its parent and worker) and 0.1-0.2 s of start-up; `rtnl_min` builds and reads the same
messages with pyroute2's rtnetlink message classes alone (docs/performance.md, "Keeping
pyroute2, leanly").  A client's counterpart is `engine.runtime.netlink`.

The kernel tests compare the link's state with what IPRoute left; the failures are
`RtnlError` (an `OSError`) naming the step and the errno.
"""

from __future__ import annotations

import errno
import socket

from engine.config.values import prefix_text
from engine.proto.addr import LL_CLIENT
from engine.runtime import rtnl_min
from engine.runtime.netlink import flush
from engine.runtime.rtnl_min import RT_TABLE_MAIN, Addr, Rtnl, RtnlError
from engine.runtime.sysctl import write_sysctl

RELAY_ROUTE_METRIC = 1024  # the first relay of a namespace; each further one takes the next
RELAY_METRIC_SPAN = 4096  # relays per namespace and prefix, far above what one host runs
RT_SCOPE_UNIVERSE = 0


class RelayLink:
    """The relay's own interface, addressed by index (names can change)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.mtu: int | None = None

    def setup(self, mtu: int, prefix32: int, fresh: bool = False) -> None:
        """Static relay set-up: MTU, link up, the link-local, ``Prefix/32`` metric 1024.

        `fresh`: the TUN was just created and nothing configured it, so there is nothing to
        flush; the flush's two dumps of the namespace's route table are what made hundreds of
        relays starting together cost each other time."""
        try:
            write_sysctl(self.name, "accept_redirects", "0")
        except OSError as e:
            raise RtnlError(f"accept_redirects on {self.name}: {e.strerror}") from None
        with Rtnl(self.name) as nl:
            if not fresh:  # a reload that keeps the device: what an earlier set-up left
                flush(nl, self.index)
            nl.link_up(self.index, mtu)
            nl.add_address6(self.index, LL_CLIENT, 64)
            self._add_prefix_route(nl, prefix32)
        self.mtu = mtu

    def _add_prefix_route(self, nl: Rtnl, prefix32: int) -> None:
        """``Prefix/32`` through our interface, at the lowest metric from 1024 up that no other
        route to that prefix holds.

        The kernel keeps one IPv6 route per prefix and metric: with every relay of a namespace
        at 1024, the second one's add failed with EEXIST and all of them shared the first
        one's route, which vanished with that relay's interface while the others still ran.
        Each relay owning a route of its own, the lowest metric carries the traffic and the
        next one takes over when a relay stops. One dump, then adds upward: a relay that loses
        a race (EEXIST: another relay took that metric between our dump and our add) tries the
        next free metric instead of dumping again (docs/performance.md, fleet start)."""
        dst = prefix32.to_bytes(4, "big") + bytes(12)
        taken: set[int] = set()
        for route in nl.routes(socket.AF_INET6, RT_TABLE_MAIN):
            if route.dst_len != 32 or route.dst != dst:
                continue
            if route.oif == self.index:
                return  # ours is there already
            taken.add(route.priority or 0)
        what = f"add Teredo prefix route on {self.name}"
        for metric in range(RELAY_ROUTE_METRIC, RELAY_ROUTE_METRIC + RELAY_METRIC_SPAN):
            if metric in taken:
                continue
            try:
                nl.add_route6(self.index, dst, 32, metric, ok_errnos=(), what=what)
                return
            except RtnlError as e:
                if e.errno != errno.EEXIST:  # EEXIST: another relay took it just now
                    raise
        last = RELAY_ROUTE_METRIC + RELAY_METRIC_SPAN - 1
        raise RtnlError(f"{what}: metrics {RELAY_ROUTE_METRIC}-{last} are all taken by other "
                        f"routes to {prefix_text(prefix32)}/32")

    def teardown(self) -> None:
        """On exit: the link down; closing the TUN descriptor then deletes the link.

        No flush first: the device is not persistent (`tun.py`), so the kernel removes its
        addresses and routes with it, and down already takes them off at once (a flush of N
        relays stopping together grew with N squared, docs/performance.md)."""
        try:
            with Rtnl(self.name) as nl:
                nl.link_down(self.index, ok_errnos=(errno.ENODEV,))
        except OSError:
            pass


# -- the relay's ICMPv6 error source ---------------------------------------------------------

IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
RTM_NEWADDR, RTM_DELADDR = rtnl_min.RTM_NEWADDR, rtnl_min.RTM_DELADDR
AddressTable = dict[tuple[int, bytes], tuple[int, int]]
"""``(ifindex, address16) -> (scope, flags)`` of the host's IPv6 addresses."""


def ipv6_only(addrs: list[Addr]) -> list[Addr]:
    """The IPv6 address messages the watch acts on (the IPv4 ones are skipped)."""
    return [a for a in addrs if a.family == socket.AF_INET6 and len(a.address) == 16]


def ifaddr_events(data: bytes) -> tuple[list[Addr], bool]:
    """The IPv6 RTM_NEWADDR/RTM_DELADDR messages of one netlink datagram, and whether all of it
    decoded (the caller then re-dumps): `AddressWatch.read`'s steps, for one datagram."""
    msgs, whole = rtnl_min.split_datagram(data)
    addrs, decoded = rtnl_min.decode_all(msgs, rtnl_min.parse_addr)
    return ipv6_only(addrs), whole and decoded


def apply_ifaddr(table: AddressTable, events: list[Addr]) -> None:
    """Update the address table from `ifaddr_events`."""
    for a in events:
        if a.type == RTM_NEWADDR:
            table[(a.index, a.address)] = (a.scope, a.flags)
        else:
            table.pop((a.index, a.address), None)


def usable_sources(table: AddressTable, own_index: int | None) -> list[bytes]:
    """The addresses an ICMPv6 error may come from, best tier only, in a stable order.

    Global scope (ULA included, as the kernel counts them), not on our own TUN, not
    tentative or failed DAD; deprecated ones only when nothing else is left (RFC 6724 rule 3),
    and stable before temporary ones (a router's errors should name a stable address).
    """
    good: list[tuple[int, bytes]] = []
    for (index, addr), (scope, flags) in table.items():
        if index == own_index or scope != RT_SCOPE_UNIVERSE:
            continue
        if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            continue
        if addr[0] == 0xFF or addr[:2] == b"\xfe\x80" or addr == bytes(15) + b"\x01":
            continue
        rank = (2 if flags & IFA_F_DEPRECATED else 0) + (1 if flags & IFA_F_TEMPORARY else 0)
        good.append((rank, addr))
    if not good:
        return []
    best_tier = 2 if min(r for r, _ in good) >= 2 else 0
    return sorted(a for r, a in good if (r >= 2) == (best_tier == 2))


def dump_ipv6_addresses() -> AddressTable:
    """Every IPv6 address of the namespace, read on a socket of its own (a subscribed socket
    would interleave notifications with the dump's answer)."""
    table: AddressTable = {}
    with Rtnl("host") as nl:
        apply_ifaddr(table, [a for a in nl.addresses(socket.AF_INET6) if len(a.address) == 16])
    return table


class SourceAddressWatcher:
    """The host's global IPv6 addresses, kept current (the relay's ICMPv6 error sources).

    miredo sends its ICMPv6 errors through a raw socket, so the kernel picks a routable source
    address; we write them to the TUN device, and a link-local source would never be forwarded
    to the native sender.  So the relay's errors come from one of the host's own global
    addresses, learnt here in the parent and handed to the worker (`channel.icmp_sources`).
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sub = rtnl_min.Subscription(rtnl_min.RTMGRP_IPV6_IFADDR)  # first: miss no change
        try:
            self.table = dump_ipv6_addresses()
        except BaseException:
            self.sub.close()
            raise
        self.sources = usable_sources(self.table, own_index)

    def fileno(self) -> int:
        return self.sub.fileno()

    def read(self) -> tuple[list[Addr], bool]:
        """The IPv6 address messages queued now, and whether some were lost."""
        addrs, lost = self.sub.read_decoded(rtnl_min.parse_addr)
        return ipv6_only(addrs), lost

    def drain(self) -> bool:
        """Read what is queued; True when the usable sources changed."""
        events, lost = self.read()
        apply_ifaddr(self.table, events)
        if lost:  # notifications were lost: read the whole table again
            try:
                self.table = dump_ipv6_addresses()
            except OSError:
                pass  # keep what we have: the best we know
        sources = usable_sources(self.table, self.own_index)
        if sources == self.sources:
            return False
        self.sources = sources
        return True

    def close(self) -> None:
        self.sub.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop our copy of the socket (the parent keeps its own)."""
        self.sub.close()

