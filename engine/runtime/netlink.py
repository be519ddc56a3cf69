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
import socket
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
