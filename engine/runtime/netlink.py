"""Interface configuration and change watching over rtnetlink (`engine.runtime.rtnl`).

What a miredo client's hook does with ``ip`` (addresses, MTU, link state, the last-resort
default route) and what miredo's relay set-up does in C, done here over rtnetlink from the
privileged parent only, always on the one interface index the parent created.  No process is
spawned, and no pyroute2: its import alone took longer than a whole qualification.

Every operation opens a short-lived socket: they are rare (qualification, reload, exit), and
a fresh socket never carries state across a fork into the worker.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from engine.runtime import rtnl
from engine.runtime.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_LINK, Rtnl, RtnlError

LL_CLIENT_TEXT = "fe80::ffff:ffff:ffff"
CLIENT_ROUTE_METRIC = 1029  # loses against the kernel's 1024: Teredo is the last resort
RELAY_ROUTE_METRIC = 1024
MAIN_TABLE = 254
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
_STATE_FLAGS = IFF_UP | IFF_RUNNING | IFF_LOWER_UP


class NetlinkConfigError(Exception):
    """An interface change failed; ``str()`` names the change and the kernel's reason."""


@contextmanager
def _ipr() -> Iterator[Rtnl]:
    try:
        ipr = Rtnl()
    except OSError as e:
        raise NetlinkConfigError(f"rtnetlink socket: {e.strerror or e}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def _prefix_text(prefix32: int) -> str:
    return str(ipaddress.IPv6Address(prefix32.to_bytes(4, "big") + bytes(12)))


def write_sysctl(ifname: str, key: str, value: str) -> None:
    """Set ``net.ipv6.conf.IF.KEY`` (a /proc write, not a process)."""
    with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
        f.write(value)


class TunnelInterface:
    """The one interface this instance owns, addressed by index (names can change)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.address: bytes | None = None
        self.mtu: int | None = None

    def prepare(self) -> None:
        """Before the link first comes up: IPv6 on, no kernel-generated link-local.

        A TUN device is NOARP, so no DAD runs; the kernel would however add its own random
        link-local on some kernels, and the Teredo link-local is the only one we want.
        """
        for key, value in (("disable_ipv6", "0"), ("addr_gen_mode", "1")):
            try:
                write_sysctl(self.name, key, value)
            except OSError:
                pass

    def _run(self, what: str, fn, *args, ok_errnos: tuple[int, ...] = (), **kwargs):
        try:
            return fn(*args, **kwargs)
        except RtnlError as e:
            if e.code in ok_errnos:
                return None
            raise NetlinkConfigError(
                f"{what} on {self.name}: {os.strerror(e.code)} (errno {e.code})"
            ) from None
        except OSError as e:  # the socket itself (timeout, ...)
            raise NetlinkConfigError(f"{what} on {self.name}: {e.strerror or e}") from None

    def _flush(self, ipr: Rtnl) -> None:
        """Remove every address and every main-table route of our interface."""
        for a in self._run("list addresses", ipr.addresses, index=self.index) or ():
            self._run(
                "delete address",
                ipr.addr_del,
                self.index,
                a.address,
                a.prefixlen,
                ok_errnos=(errno.EADDRNOTAVAIL, errno.ENODEV),
            )
        for family in (socket.AF_INET6, socket.AF_INET):
            for route in self._run("list routes", ipr.routes, family, MAIN_TABLE) or ():
                if route.oif != self.index or route.protocol == rtnl.RTPROT_KERNEL:
                    continue  # proto kernel: removed with the addresses/link
                self._run(
                    "delete route",
                    ipr.route_del,
                    family,
                    route.dst,
                    route.dst_len,
                    self.index,
                    route.priority,
                    MAIN_TABLE,
                    ok_errnos=(errno.ESRCH, errno.ENODEV),
                )

    def client_up(self, address: bytes, mtu: int) -> None:
        """Teredo address /32, the fixed link-local /64, the MTU and ``::/0`` metric 1029.

        A changed address replaces the old one (the whole interface is flushed first), so
        addresses never pile up the way they do with miredo's BSD hook.
        """
        addr = str(ipaddress.IPv6Address(address))
        with _ipr() as ipr:
            self._flush(ipr)
            self._run("set MTU/up", ipr.link_set, self.index, mtu=mtu, up=True)
            for a, plen in ((LL_CLIENT_TEXT, 64), (addr, 32)):
                self._run(
                    f"add address {a}/{plen}",
                    ipr.addr_add,
                    self.index,
                    a,
                    plen,
                    ok_errnos=(errno.EEXIST,),
                )
            self._run(
                "add default route",
                ipr.route_add,
                socket.AF_INET6,
                "::",
                0,
                self.index,
                CLIENT_ROUTE_METRIC,
                ok_errnos=(errno.EEXIST,),
            )
        self.address, self.mtu = address, mtu

    def client_down(self) -> None:
        """Addresses and routes gone, link down (what the hook does on STATE=down)."""
        with _ipr() as ipr:
            self._flush(ipr)
            self._run("set down", ipr.link_set, self.index, up=False, ok_errnos=(errno.ENODEV,))
        self.address = None

    def relay_setup(self, mtu: int, prefix32: int) -> None:
        """Static relay set-up: MTU, link up, the link-local, ``Prefix/32`` metric 1024."""
        try:
            write_sysctl(self.name, "accept_redirects", "0")
        except OSError as e:
            raise NetlinkConfigError(f"accept_redirects on {self.name}: {e.strerror}")
        with _ipr() as ipr:
            self._flush(ipr)
            self._run("set MTU/up", ipr.link_set, self.index, mtu=mtu, up=True)
            self._run(
                f"add address {LL_CLIENT_TEXT}/64",
                ipr.addr_add,
                self.index,
                LL_CLIENT_TEXT,
                64,
                ok_errnos=(errno.EEXIST,),
            )
            self._run(
                "add Teredo prefix route",
                ipr.route_add,
                socket.AF_INET6,
                _prefix_text(prefix32),
                32,
                self.index,
                RELAY_ROUTE_METRIC,
                ok_errnos=(errno.EEXIST,),
            )
        self.mtu = mtu

    def teardown(self) -> None:
        """On exit: flush and down; closing the TUN descriptor then deletes the link."""
        try:
            self.client_down()
        except NetlinkConfigError:
            pass


class AddressWatcher:
    """Host IPv4 address and link changes, read from an rtnetlink multicast socket.

    Only the fact of a change matters (the worker re-qualifies), so messages are decoded just
    far enough to ignore our own interface and link messages that do not change a link's
    up/running state.
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        try:
            self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
            self._link_flags: dict[int, int] = {}
            with Rtnl() as ipr:  # seed, so that the first unrelated NEWLINK is not a "change"
                for link in ipr.links():
                    self._link_flags[link.index] = link.flags & _STATE_FLAGS
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> list[str]:
        """Read everything queued; return one short reason per relevant change."""
        reasons: list[str] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # ENOBUFS: we lost messages, so assume something changed
                reasons.append(f"netlink overrun ({e.strerror})")
                continue
            for msg in rtnl.parse(data):
                reason = self._relevant(msg)
                if reason:
                    reasons.append(reason)
        return reasons

    def _relevant(self, msg: rtnl.Message) -> str | None:
        if msg.type in (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR):
            a = rtnl.address_of(msg)
            if a is None or a.index == self.own_index or a.family != socket.AF_INET:
                return None
            verb = "added" if msg.type == rtnl.RTM_NEWADDR else "removed"
            return f"IPv4 address {a.address} {verb} (ifindex {a.index})"
        if msg.type not in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
            return None
        link = rtnl.link_of(msg)
        if link.index == self.own_index:
            return None
        if msg.type == rtnl.RTM_DELLINK:
            self._link_flags.pop(link.index, None)
            return f"link {link.name} removed"
        flags = link.flags & _STATE_FLAGS
        old = self._link_flags.get(link.index)
        self._link_flags[link.index] = flags
        if old is None or old != flags:
            state = "up" if flags & IFF_RUNNING else "down"
            return f"link {link.name} {state}"
        return None

    def close(self) -> None:
        self.sock.close()


# -- the relay's ICMPv6 error source ---------------------------------------------------------

IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
RTM_NEWADDR, RTM_DELADDR = rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR


def parse_ifaddr(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """IPv6 RTM_NEWADDR/RTM_DELADDR messages in a netlink read, as
    ``(type, ifindex, scope, flags, address16)``; other messages are skipped.
    ``flags`` is the 32-bit IFA_FLAGS attribute when present (it supersedes the 8-bit field).
    """
    for m in rtnl.parse(data):
        if m.type not in (RTM_NEWADDR, RTM_DELADDR):
            continue
        family, _plen, flags, scope, index = m.header
        raw = m.attrs.get(rtnl.IFA_LOCAL) or m.attrs.get(rtnl.IFA_ADDRESS)
        if family != socket.AF_INET6 or raw is None or len(raw) != 16:
            continue
        extended = m.u32(rtnl.IFA_FLAGS)
        yield m.type, index, scope, extended if extended is not None else flags, raw


def usable_sources(table: dict[tuple[int, bytes], tuple[int, int]], own_index: int | None
                   ) -> list[bytes]:
    """The addresses an ICMPv6 error may come from, best tier only, in a stable order.

    Global scope (ULA included, as the kernel counts them), not on our own TUN, not
    tentative or failed DAD; deprecated ones only when nothing else is left (RFC 6724 rule 3),
    and stable before temporary ones (a router's errors should name a stable address).
    """
    good: list[tuple[int, bytes]] = []
    for (index, addr), (scope, flags) in table.items():
        if index == own_index or scope != rtnl.RT_SCOPE_UNIVERSE:
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


class SourceAddressWatcher:
    """The host's global IPv6 addresses, kept current from rtnetlink (relay ICMPv6 errors).

    miredo sends its ICMPv6 errors through a raw socket, so the kernel picks a routable source
    address; we write them to the TUN device, and a link-local source would never be forwarded
    to the native sender.  So the relay's errors come from one of the host's own global
    addresses, learnt here.  Created before the privileges drop; reading the multicast group
    and dumping addresses need no privilege and no file system, so it works in the worker.
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        try:
            self.sock.bind((0, rtnl.RTMGRP_IPV6_IFADDR))  # subscribe first: miss no change
            self.table = dump_ipv6_addresses()
        except BaseException:
            self.sock.close()
            raise
        self.sources = usable_sources(self.table, own_index)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read what is queued; True when the usable sources changed."""
        lost = False
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: notifications were lost; read the whole table again
                lost = True
                continue
            apply_ifaddr(self.table, data)
        if lost:
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
        self.sock.close()


def apply_ifaddr(table: dict[tuple[int, bytes], tuple[int, int]], data: bytes) -> None:
    """Update ``(ifindex, address) -> (scope, flags)`` from a netlink read."""
    for mtype, index, scope, flags, addr in parse_ifaddr(data):
        if mtype == RTM_NEWADDR:
            table[(index, addr)] = (scope, flags)
        else:
            table.pop((index, addr), None)


def dump_ipv6_addresses() -> dict[tuple[int, bytes], tuple[int, int]]:
    """Every IPv6 address of the namespace, read once on a socket of its own (a subscribed
    socket would interleave notifications with the dump's answer)."""
    table: dict[tuple[int, bytes], tuple[int, int]] = {}
    with Rtnl() as q:
        for a in q.addresses(socket.AF_INET6):
            table[(a.index, socket.inet_pton(socket.AF_INET6, a.address))] = (a.scope, a.flags)
    return table
