"""Interface configuration and change watching over rtnetlink, through pyroute2.

What a miredo client's hook does with ``ip`` (addresses, MTU, link state, the last-resort
default route) and what miredo's relay set-up does in C, done here with pyroute2's `IPRoute`
from the privileged parent only, always on the one interface index the parent created.
No process is spawned.

Every operation opens a short-lived `IPRoute`: they are rare (qualification, reload, exit), and
a fresh socket never carries state across a fork into the worker.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

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
def _ipr() -> Iterator[IPRoute]:
    ipr = IPRoute()
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
        except NetlinkError as e:
            if e.code in ok_errnos:
                return None
            raise NetlinkConfigError(f"{what} on {self.name}: {e.args[-1]} (errno {e.code})")

    def _flush(self, ipr: IPRoute) -> None:
        """Remove every address and every main-table route of our interface."""
        for msg in ipr.get_addr(index=self.index):
            self._run(
                "delete address",
                ipr.addr,
                "del",
                index=self.index,
                address=msg.get("address"),
                prefixlen=msg["prefixlen"],
                ok_errnos=(errno.EADDRNOTAVAIL, errno.ENODEV),
            )
        for family in (socket.AF_INET6, socket.AF_INET):
            for route in ipr.get_routes(family=family, table=MAIN_TABLE):
                if route.get("oif") != self.index or route.get("proto") == 2:
                    continue  # proto 2 = kernel: removed with the addresses/link
                self._run(
                    "delete route",
                    ipr.route,
                    "del",
                    family=family,
                    dst=route.get("dst"),
                    dst_len=route["dst_len"],
                    oif=self.index,
                    priority=route.get("priority"),
                    table=MAIN_TABLE,
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
            self._run("set MTU/up", ipr.link, "set", index=self.index, mtu=mtu, state="up")
            for a, plen in ((LL_CLIENT_TEXT, 64), (addr, 32)):
                self._run(
                    f"add address {a}/{plen}",
                    ipr.addr,
                    "add",
                    index=self.index,
                    address=a,
                    prefixlen=plen,
                    ok_errnos=(errno.EEXIST,),
                )
            self._run(
                "add default route",
                ipr.route,
                "add",
                family=socket.AF_INET6,
                dst="::",
                dst_len=0,
                oif=self.index,
                priority=CLIENT_ROUTE_METRIC,
                ok_errnos=(errno.EEXIST,),
            )
        self.address, self.mtu = address, mtu

    def client_down(self) -> None:
        """Addresses and routes gone, link down (what the hook does on STATE=down)."""
        with _ipr() as ipr:
            self._flush(ipr)
            self._run("set down", ipr.link, "set", index=self.index, state="down",
                      ok_errnos=(errno.ENODEV,))
        self.address = None

    def relay_setup(self, mtu: int, prefix32: int) -> None:
        """Static relay set-up: MTU, link up, the link-local, ``Prefix/32`` metric 1024."""
        try:
            write_sysctl(self.name, "accept_redirects", "0")
        except OSError as e:
            raise NetlinkConfigError(f"accept_redirects on {self.name}: {e.strerror}")
        with _ipr() as ipr:
            self._flush(ipr)
            self._run("set MTU/up", ipr.link, "set", index=self.index, mtu=mtu, state="up")
            self._run(
                f"add address {LL_CLIENT_TEXT}/64",
                ipr.addr,
                "add",
                index=self.index,
                address=LL_CLIENT_TEXT,
                prefixlen=64,
                ok_errnos=(errno.EEXIST,),
            )
            self._run(
                "add Teredo prefix route",
                ipr.route,
                "add",
                family=socket.AF_INET6,
                dst=_prefix_text(prefix32),
                dst_len=32,
                oif=self.index,
                priority=RELAY_ROUTE_METRIC,
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

    Only the fact of a change matters (the worker re-qualifies), so messages are decoded with
    pyroute2's marshal just far enough to ignore our own interface and link messages that do
    not change a link's up/running state.
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
        self._marshal = MarshalRtnl()
        self._link_flags: dict[int, int] = {}
        with _ipr() as ipr:  # seed, so that the first unrelated NEWLINK is not a "change"
            for link in ipr.get_links():
                self._link_flags[link["index"]] = link["flags"] & _STATE_FLAGS

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
            for msg in self._marshal.parse(data):
                reason = self._relevant(msg)
                if reason:
                    reasons.append(reason)
        return reasons

    def _relevant(self, msg) -> str | None:
        event = msg.get("event")
        index = msg.get("index")
        if index == self.own_index:
            return None
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if msg.get("family") != socket.AF_INET:
                return None
            verb = "added" if event == "RTM_NEWADDR" else "removed"
            return f"IPv4 address {msg.get_attr('IFA_ADDRESS')} {verb} (ifindex {index})"
        if event == "RTM_DELLINK":
            self._link_flags.pop(index, None)
            return f"link {msg.get_attr('IFLA_IFNAME')} removed"
        if event == "RTM_NEWLINK":
            flags = msg.get("flags", 0) & _STATE_FLAGS
            old = self._link_flags.get(index)
            self._link_flags[index] = flags
            if old is None or old != flags:
                state = "up" if flags & IFF_RUNNING else "down"
                return f"link {msg.get_attr('IFLA_IFNAME')} {state}"
        return None

    def close(self) -> None:
        self.sock.close()


# -- the relay's ICMPv6 error source ---------------------------------------------------------

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTMGRP_IPV6_IFADDR = 0x100
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
RT_SCOPE_UNIVERSE = 0
_NLMSG = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def parse_ifaddr(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """IPv6 RTM_NEWADDR/RTM_DELADDR messages in a netlink read, as
    ``(type, ifindex, scope, flags, address16)``; other messages are skipped.

    Decoded by hand (a few fixed structs) rather than through pyroute2: this runs in the
    unprivileged, maybe chrooted worker, where a lazy import could not read its module.
    ``flags`` is the 32-bit IFA_FLAGS attribute when present (it supersedes the 8-bit field).
    """
    off, end = 0, len(data)
    while off + _NLMSG.size <= end:
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > end:
            return
        body = off + _NLMSG.size
        if mtype in (RTM_NEWADDR, RTM_DELADDR) and length >= _NLMSG.size + _IFADDRMSG.size:
            family, _plen, flags, scope, index = _IFADDRMSG.unpack_from(data, body)
            if family == socket.AF_INET6:
                addr = local = None
                a = body + _IFADDRMSG.size
                while a + _RTATTR.size <= off + length:
                    alen, atype = _RTATTR.unpack_from(data, a)
                    if alen < _RTATTR.size or a + alen > off + length:
                        break
                    value = data[a + _RTATTR.size : a + alen]
                    if atype == IFA_ADDRESS and len(value) == 16:
                        addr = bytes(value)
                    elif atype == IFA_LOCAL and len(value) == 16:
                        local = bytes(value)
                    elif atype == IFA_FLAGS and len(value) == 4:
                        flags = struct.unpack("=I", value)[0]
                    a += (alen + 3) & ~3
                address = local or addr
                if address is not None:
                    yield mtype, index, scope, flags, address
        off += (length + 3) & ~3


def usable_sources(table: dict[tuple[int, bytes], tuple[int, int]], own_index: int | None
                   ) -> list[bytes]:
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
            self.sock.bind((0, RTMGRP_IPV6_IFADDR))  # subscribe first: no change is missed
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
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as q:
        q.settimeout(5.0)
        q.bind((0, 0))
        req = _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, 0)
        q.send(_NLMSG.pack(_NLMSG.size + len(req), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                           os.getpid() & 0xFFFF, 0) + req)
        while True:
            data = q.recv(65536)
            apply_ifaddr(table, data)
            if _done(data):
                return table


def _done(data: bytes) -> bool:
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _f, _s, _p = _NLMSG.unpack_from(data, off)
        if mtype in (NLMSG_DONE, NLMSG_ERROR):
            return True
        if length < _NLMSG.size:
            return True
        off += (length + 3) & ~3
    return False
