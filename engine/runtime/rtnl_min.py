"""The few rtnetlink requests a fresh tunnel needs, packed by hand on a plain netlink socket.

Why not pyroute2 for these: a client's parent adds the qualified address only once its
rtnetlink code is loaded, and loading pyroute2's `IPRoute` takes 0.1-0.2 s (it pulls in
asyncio), about five times a whole qualification in a LAN.  pyroute2's message classes alone
(`pyroute2.netlink.rtnl.ifaddrmsg` and friends, without asyncio) still take ~33 ms and 61
modules.  Four fixed-layout requests packed with `struct` cost nothing to load, so the
qualified address is on the link as soon as the worker reports it.

Only what is safe on a *fresh* TUN device lives here: set MTU and link up, add an address,
add a route, each acknowledged by the kernel.  Everything that must read state first (the
flush before an address change, teardown, host watching) stays pyroute2's, in
`engine.runtime.netlink`, which the parent loads once the critical path is over.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFLA_MTU = 4
IFA_ADDRESS = 1
RTA_DST, RTA_OIF, RTA_PRIORITY = 1, 4, 6
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLMSGERR = struct.Struct("=i")
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE


class RtnlError(OSError):
    """A request failed; ``str()`` names it, the interface and the reason (one string, like
    `netlink.NetlinkConfigError`, so both read the same in the log)."""


def _attr(kind: int, value: bytes) -> bytes:
    size = 4 + len(value)
    return struct.pack("=HH", size, kind) + value + b"\0" * (-size & 3)


class Rtnl:
    """One rtnetlink socket for a handful of acknowledged requests, then closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, what: str, mtype: int, flags: int, body: bytes,
                ok_errnos: tuple[int, ...] = ()) -> None:
        """Send one request and wait for its acknowledgement; `RtnlError` on refusal."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, rtype, _f, rseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    break
                if rtype == NLMSG_ERROR and rseq == seq:
                    (code,) = _NLMSGERR.unpack_from(data, off + _NLMSGHDR.size)
                    if code == 0 or -code in ok_errnos:
                        return
                    raise RtnlError(
                        f"{what} on {self.name}: {os.strerror(-code)} (errno {-code})")
                off += (length + 3) & ~3

    def link_up(self, index: int, mtu: int) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self.request("set MTU/up", RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                     body + _attr(IFLA_MTU, struct.pack("=I", mtu)))

    def add_address6(self, index: int, address: bytes, prefixlen: int) -> None:
        body = _IFADDRMSG.pack(socket.AF_INET6, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        text = socket.inet_ntop(socket.AF_INET6, address)
        self.request(f"add address {text}/{prefixlen}", RTM_NEWADDR, _CREATE,
                     body + _attr(IFA_ADDRESS, address), ok_errnos=(errno.EEXIST,))

    def add_route6(self, index: int, dst: bytes, dst_len: int, metric: int) -> None:
        body = _RTMSG.pack(socket.AF_INET6, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if dst_len:
            body += _attr(RTA_DST, dst)
        body += _attr(RTA_OIF, struct.pack("=i", index))
        body += _attr(RTA_PRIORITY, struct.pack("=I", metric))
        text = socket.inet_ntop(socket.AF_INET6, dst)
        self.request(f"add route {text}/{dst_len}", RTM_NEWROUTE, _CREATE, body,
                     ok_errnos=(errno.EEXIST,))


def configure_fresh(index: int, name: str, mtu: int, addresses: list[tuple[bytes, int]],
                    route: tuple[bytes, int, int]) -> None:
    """MTU and up, `addresses` ``(address16, prefixlen)``, then `route` ``(dst16, len,
    metric)`` on interface `index`: what `netlink.TunnelInterface` does after its flush, for
    a device that has never been configured (nothing to flush).  `RtnlError` names the step."""
    try:
        with Rtnl(name) as nl:
            nl.link_up(index, mtu)
            for address, plen in addresses:
                nl.add_address6(index, address, plen)
            nl.add_route6(index, *route)
    except RtnlError:
        raise
    except OSError as e:
        raise RtnlError(f"rtnetlink on {name}: {e.strerror or e}") from None
