"""A client's interface configuration and host-change watching over rtnetlink, through
pyroute2.

What a miredo client's hook does with ``ip`` (addresses, MTU, link state, the last-resort
default route), done here with pyroute2's `IPRoute` from the privileged parent only, always on
the one interface index the parent created.  No process is spawned.  The same parent watches
the host through pyroute2: its IPv4 addresses and links (a client re-qualifies when they
change) and lists them for local discovery; the worker only receives the results.  A relay
needs none of this: its set-up and its watch of the host's IPv6 addresses go through
`engine.runtime.relay_link`, without pyroute2.

Importing this module imports pyroute2's rtnetlink parts (`engine.runtime.pyroute2_lean` skips
the package ``__init__``, which imports every netlink family it knows), still 0.1-0.2 s.  So
the privileged parent (`engine.runtime.parent`) imports it lazily: a client's parent forks its
worker first and imports pyroute2 while the worker sends its first Router Solicitation on the
other core (see `Parent.start`).

Every configuration change opens a short-lived `IPRoute`: changes are rare (qualification,
reload, exit), and a closed socket carries no state into a later worker fork.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from engine.runtime import pyroute2_lean

pyroute2_lean.install()  # before the first pyroute2 import: its package __init__ is not needed

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_LINK  # noqa: E402

LL_CLIENT_TEXT = "fe80::ffff:ffff:ffff"
CLIENT_ROUTE_METRIC = 1029  # loses against the kernel's 1024: Teredo is the last resort
MAIN_TABLE = 254
RTPROT_KERNEL = 2
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
_STATE_FLAGS = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
RECV_SIZE = 1 << 16


class NetlinkConfigError(OSError):
    """An interface change failed; ``str()`` names the change and the kernel's reason.

    An `OSError`, so that callers handle it with the socket and file errors of the same
    set-up step (the parent must not import this module, and pyroute2, to catch it)."""


def _open_ipr() -> IPRoute:
    try:
        return IPRoute()
    except OSError as e:
        raise NetlinkConfigError(f"rtnetlink socket: {e.strerror or e}") from None


@contextmanager
def _ipr() -> Iterator[IPRoute]:
    ipr = _open_ipr()
    try:
        yield ipr
    finally:
        ipr.close()


class TunnelInterface:
    """The one interface this instance owns, addressed by index (names can change)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.address: bytes | None = None
        self.mtu: int | None = None

    def _run(self, what: str, fn, *args, ok_errnos: tuple[int, ...] = (), **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetlinkError as e:
            if e.code in ok_errnos:
                return None
            raise NetlinkConfigError(
                f"{what} on {self.name}: {os.strerror(e.code)} (errno {e.code})"
            ) from None
        except OSError as e:  # the socket itself
            raise NetlinkConfigError(f"{what} on {self.name}: {e.strerror or e}") from None

    def _flush(self, ipr: IPRoute) -> None:
        """Remove every address and every main-table route of our interface."""
        for msg in self._run("list addresses", ipr.get_addr, index=self.index) or ():
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
            routes = self._run("list routes", ipr.get_routes, family=family, table=MAIN_TABLE)
            for route in routes or ():
                if route.get("oif") != self.index or route.get("proto") == RTPROT_KERNEL:
                    continue  # proto kernel: removed with the addresses/link
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

    def teardown(self) -> None:
        """On exit: the link down; closing the TUN descriptor then deletes the link.

        No flush first: the device is not persistent (`tun.py`), so the kernel removes its
        addresses and routes with it, and down already takes them off at once. A flush costs
        two dumps of the namespace's whole route table, and N relays stopping together made
        `down --all` grow with N squared (12.5 s for 300 relays, docs/performance.md)."""
        with contextlib.suppress(NetlinkConfigError, OSError), _ipr() as ipr:
            self._run("set down", ipr.link, "set", index=self.index, state="down",
                      ok_errnos=(errno.ENODEV,))
        self.address = None


# -- reading the host's links and addresses --------------------------------------------------

class Link(NamedTuple):
    index: int
    name: str
    flags: int


class Address(NamedTuple):
    index: int
    address: str
    prefixlen: int


def host_links_and_ipv4() -> tuple[list[Link], list[Address]]:
    """Every link and every IPv4 address of the namespace (local discovery's candidates)."""
    with _ipr() as ipr:
        links = [Link(m["index"], m.get("ifname") or "", m["flags"]) for m in ipr.get_links()]
        addrs = [Address(m["index"], m.get("address"), m["prefixlen"])
                 for m in ipr.get_addr(family=socket.AF_INET) if m.get("address")]
    return links, addrs


def decode(marshal: Any, data: bytes, out: list[Any]) -> bool:
    """Append the messages of one netlink read, decoded by pyroute2, to `out`; False when
    part of it did not decode (pyroute2 raises on a truncated message, or flags it)."""
    try:
        for m in marshal.parse(data):
            if m["header"].get("error") is not None:
                return False
            out.append(m)
    except (struct.error, ValueError, IndexError, KeyError, TypeError):
        return False
    return True


class _Subscription:
    """A pyroute2 `IPRoute` bound to rtnetlink multicast groups, read from our own loop.

    pyroute2 subscribes (``bind(groups=...)``) and decodes (its rtnetlink marshal); the
    datagrams are read here, without blocking, whenever the parent's epoll loop sees the
    descriptor readable.  `IPRoute.get()` is not used for that on purpose: it runs pyroute2's
    private asyncio loop, which may read a second datagram ahead into its own queue, where
    our loop could not see it until the next, unrelated, change.  So nothing but `recv` runs
    on this object after `bind` (every dump uses a short-lived `IPRoute` of its own).
    """

    def __init__(self, groups: int) -> None:
        self.ipr = _open_ipr()
        try:
            self.ipr.bind(groups=groups)
            self._fd = self.ipr.fileno()
        except BaseException:
            self.ipr.close()
            raise

    def fileno(self) -> int:
        return self._fd

    def read(self) -> tuple[list[Any], bool]:
        """The decoded messages queued now, and whether the kernel dropped some (ENOBUFS)."""
        msgs: list[Any] = []
        lost = False
        while True:
            try:
                data = self.ipr.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: the queue overflowed and notifications were lost
                lost = True
                continue
            if not data:
                break
            if not decode(self.ipr.marshal, data, msgs):
                lost = True  # a datagram we cannot read: count it as lost, re-read the state
        return msgs, lost

    def close(self) -> None:
        self.ipr.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop our copy of the socket without running pyroute2.

        `close()` would run pyroute2's asyncio loop, whose epoll instance the fork shares
        with the parent: unregistering there would unregister in the parent too.
        """
        try:
            os.close(self._fd)
        except OSError:
            pass


class _Watcher:
    """What the parent's loop needs of a watcher: its descriptor and both closes."""

    sub: _Subscription

    def fileno(self) -> int:
        return self.sub.fileno()

    def close(self) -> None:
        self.sub.close()

    def close_in_child(self) -> None:
        self.sub.close_in_child()


class AddressWatcher(_Watcher):
    """Host IPv4 address and link changes (a client re-qualifies at once).

    Only the fact of a change matters, so messages are read just far enough to ignore our
    own interface and link messages that do not change a link's up/running state.
    """

    def __init__(self, own_index: int | None) -> None:
        self.own_index = own_index
        self.sub = _Subscription(RTMGRP_LINK | RTMGRP_IPV4_IFADDR)
        try:
            self._link_flags: dict[int, int] = {}
            with _ipr() as ipr:  # seed, so that the first unrelated NEWLINK is no "change"
                for link in ipr.get_links():
                    self._link_flags[link["index"]] = link["flags"] & _STATE_FLAGS
        except BaseException:
            self.sub.close()
            raise

    def drain(self) -> list[str]:
        """Read everything queued; return one short reason per relevant change."""
        msgs, lost = self.sub.read()
        reasons = ["netlink overrun (notifications lost)"] if lost else []
        for msg in msgs:
            reason = self._relevant(msg)
            if reason:
                reasons.append(reason)
        return reasons

    def _relevant(self, msg: Any) -> str | None:
        event = msg.get("event")
        index = msg.get("index")
        if index == self.own_index:
            return None
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if msg.get("family") != socket.AF_INET:
                return None
            verb = "added" if event == "RTM_NEWADDR" else "removed"
            return f"IPv4 address {msg.get('address')} {verb} (ifindex {index})"
        if event == "RTM_DELLINK":
            self._link_flags.pop(index, None)
            return f"link {msg.get('ifname')} removed"
        if event == "RTM_NEWLINK":
            flags = msg.get("flags", 0) & _STATE_FLAGS
            old = self._link_flags.get(index)
            self._link_flags[index] = flags
            if old is None or old != flags:
                state = "up" if flags & IFF_RUNNING else "down"
                return f"link {msg.get('ifname')} {state}"
        return None
