"""The rtnetlink requests and dumps the engine makes itself, packed and read with `struct`.

Why not pyroute2 for these: loading pyroute2's `IPRoute` takes 0.1-0.2 s (it pulls in asyncio)
and about 7 MiB of every process that imports it; pyroute2's message classes alone
(`pyroute2.netlink.rtnl.ifaddrmsg` and friends, without asyncio) still take ~33 ms, 61 modules
and ~3.8 MiB.  The fixed-layout messages below cost nothing to load (docs/performance.md).

Two users: a client's first address on its fresh TUN (`configure_fresh`: MTU and up, two
addresses, ``::/0``, so the qualified address is on the link as soon as the worker reports it),
and the whole of a relay's rtnetlink work (`engine.runtime.relay_link`: its static set-up,
teardown and the watch of the host's IPv6 addresses), so that a relay never loads pyroute2.  A
client's later changes, which read state first (the flush before a changed address, the host
watch), stay pyroute2's, in `engine.runtime.netlink`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_TABLE = 1, 4, 6, 15
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
RT_SCOPE_NOWHERE = 255
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RECV_SIZE = 1 << 16
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLMSGERR = struct.Struct("=i")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE


class RtnlError(OSError):
    """A request failed; ``str()`` names it, the interface and the reason (one string, like
    `netlink.NetlinkConfigError`, so both read the same in the log); `errno` is the kernel's
    code when it refused."""

    @classmethod
    def of(cls, what: str, name: str, code: int) -> RtnlError:
        err = cls(f"{what} on {name}: {os.strerror(code)} (errno {code})")
        err.errno = code
        return err


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
                    raise RtnlError.of(what, self.name, -code)
                off += (length + 3) & ~3

    def dump(self, what: str, mtype: int, body: bytes) -> list[tuple[int, bytes]]:
        """Every ``(type, payload)`` of one dump request; `RtnlError` when it is refused."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype,
                                      NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            for rtype, rseq, payload in messages(data):
                if rseq != seq:
                    continue
                if rtype == NLMSG_DONE:
                    return out
                if rtype == NLMSG_ERROR:
                    (code,) = _NLMSGERR.unpack_from(payload)
                    raise RtnlError.of(what, self.name, -code)
                out.append((rtype, payload))

    def link_up(self, index: int, mtu: int) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self.request("set MTU/up", RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                     body + _attr(IFLA_MTU, struct.pack("=I", mtu)))

    def link_down(self, index: int, ok_errnos: tuple[int, ...] = ()) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, IFF_UP)
        self.request("set down", RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, body,
                     ok_errnos=ok_errnos)

    def links(self) -> list[Link]:
        """Every link of the namespace."""
        got = self.dump("list links", RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        return [link for link in (parse_link(t, p) for t, p in got) if link is not None]

    def addresses(self, family: int, index: int = 0) -> list[Addr]:
        """The addresses of `family` (of interface `index` only, when not 0)."""
        got = self.dump("list addresses", RTM_GETADDR, _IFADDRMSG.pack(family, 0, 0, 0, 0))
        found = (parse_addr(t, p) for t, p in got)
        return [a for a in found if a is not None and (not index or a.index == index)]

    def delete_address(self, a: Addr, ok_errnos: tuple[int, ...] = ()) -> None:
        body = _IFADDRMSG.pack(a.family, a.prefixlen, 0, 0, a.index)
        if a.local is not None:
            body += _attr(IFA_LOCAL, a.local)
        body += _attr(IFA_ADDRESS, a.peer if a.peer is not None else a.address)
        self.request("delete address", RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, body,
                     ok_errnos=ok_errnos)

    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> list[Route]:
        """The routes of `family` in `table` (the kernel dumps every table: filtered here)."""
        got = self.dump("list routes", RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
        found = (parse_route(t, p) for t, p in got)
        return [r for r in found if r is not None and r.table == table]

    def delete_route(self, r: Route, ok_errnos: tuple[int, ...] = ()) -> None:
        body = _RTMSG.pack(r.family, r.dst_len, 0, 0, r.table if r.table < 256 else 0, 0,
                           RT_SCOPE_NOWHERE, 0, 0)
        if r.dst_len:
            body += _attr(RTA_DST, r.dst)
        if r.table >= 256:
            body += _attr(RTA_TABLE, _U32.pack(r.table))
        if r.oif is not None:
            body += _attr(RTA_OIF, struct.pack("=i", r.oif))
        if r.priority is not None:
            body += _attr(RTA_PRIORITY, _U32.pack(r.priority))
        self.request("delete route", RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, body,
                     ok_errnos=ok_errnos)

    def add_address6(self, index: int, address: bytes, prefixlen: int) -> None:
        body = _IFADDRMSG.pack(socket.AF_INET6, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        text = socket.inet_ntop(socket.AF_INET6, address)
        self.request(f"add address {text}/{prefixlen}", RTM_NEWADDR, _CREATE,
                     body + _attr(IFA_ADDRESS, address), ok_errnos=(errno.EEXIST,))

    def add_route6(self, index: int, dst: bytes, dst_len: int, metric: int,
                   ok_errnos: tuple[int, ...] = (errno.EEXIST,), what: str = "") -> None:
        body = _RTMSG.pack(socket.AF_INET6, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if dst_len:
            body += _attr(RTA_DST, dst)
        body += _attr(RTA_OIF, struct.pack("=i", index))
        body += _attr(RTA_PRIORITY, struct.pack("=I", metric))
        text = socket.inet_ntop(socket.AF_INET6, dst)
        self.request(what or f"add route {text}/{dst_len}", RTM_NEWROUTE, _CREATE, body,
                     ok_errnos=ok_errnos)


# -- reading what the kernel sends -----------------------------------------------------------

class Addr(NamedTuple):
    """One RTM_NEWADDR/RTM_DELADDR.  `address` is the interface's own address (IFA_LOCAL,
    else IFA_ADDRESS); `local` and `peer` are those two attributes as sent (None when absent),
    for a delete that names the address exactly; `flags` is the 32-bit IFA_FLAGS when
    present, which supersedes the message's 8-bit field."""

    type: int
    family: int
    prefixlen: int
    flags: int
    scope: int
    index: int
    address: bytes
    local: bytes | None
    peer: bytes | None


class Link(NamedTuple):
    """One RTM_NEWLINK/RTM_DELLINK: index, IFF_* flags and name ("" when absent)."""

    type: int
    index: int
    flags: int
    name: str


class Route(NamedTuple):
    """One route of a dump; `dst` is empty for a default route."""

    family: int
    dst_len: int
    table: int
    protocol: int
    dst: bytes
    oif: int | None
    priority: int | None


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(type, seq, payload)`` of every message in one netlink read, in order; a truncated
    or malformed one raises `MalformedError` after those before it."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, rtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            raise MalformedError(f"netlink message of {length} bytes at offset {off}")
        yield rtype, seq, data[off + _NLMSGHDR.size:off + length]
        off += (length + 3) & ~3
    if off < len(data):
        raise MalformedError(f"{len(data) - off} bytes after the last netlink message")


class MalformedError(ValueError):
    """A netlink read that does not parse (truncated message or attribute)."""


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    """The route attributes after a fixed header: ``{type: value}`` (the last one wins)."""
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(payload):
        size, kind = _RTATTR.unpack_from(payload, offset)
        if size < _RTATTR.size or offset + size > len(payload):
            raise MalformedError(f"route attribute of {size} bytes at offset {offset}")
        attrs[kind & 0x3FFF] = payload[offset + _RTATTR.size:offset + size]
        offset += (size + 3) & ~3
    return attrs


def parse_addr(mtype: int, payload: bytes) -> Addr | None:
    """An address message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWADDR, RTM_DELADDR):
        return None
    if len(payload) < _IFADDRMSG.size:
        raise MalformedError("short address message")
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = attributes(payload, _IFADDRMSG.size)
    extended = attrs.get(IFA_FLAGS)
    if extended is not None and len(extended) >= 4:
        (flags,) = _U32.unpack_from(extended)
    local, peer = attrs.get(IFA_LOCAL), attrs.get(IFA_ADDRESS)
    address = local if local is not None else peer if peer is not None else b""
    return Addr(mtype, family, prefixlen, flags, scope, index, address, local, peer)


def parse_link(mtype: int, payload: bytes) -> Link | None:
    """A link message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWLINK, RTM_DELLINK):
        return None
    if len(payload) < _IFINFOMSG.size:
        raise MalformedError("short link message")
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    name = attributes(payload, _IFINFOMSG.size).get(IFLA_IFNAME, b"")
    return Link(mtype, index, flags, name.split(b"\0", 1)[0].decode(errors="replace"))


def parse_route(mtype: int, payload: bytes) -> Route | None:
    """A route message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWROUTE, RTM_DELROUTE):
        return None
    if len(payload) < _RTMSG.size:
        raise MalformedError("short route message")
    family, dst_len, _src_len, _tos, table, protocol, _scope, _type, _flags = \
        _RTMSG.unpack_from(payload)
    attrs = attributes(payload, _RTMSG.size)
    if RTA_TABLE in attrs and len(attrs[RTA_TABLE]) >= 4:
        (table,) = _U32.unpack_from(attrs[RTA_TABLE])
    oif = attrs.get(RTA_OIF)
    prio = attrs.get(RTA_PRIORITY)
    return Route(family, dst_len, table, protocol, attrs.get(RTA_DST, b""),
                 struct.unpack("=i", oif[:4])[0] if oif and len(oif) >= 4 else None,
                 _U32.unpack_from(prio)[0] if prio and len(prio) >= 4 else None)


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


class Subscription:
    """A netlink socket bound to rtnetlink multicast groups, read without blocking from the
    parent's own loop whenever it is readable (no thread, no library loop)."""

    def __init__(self, groups: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        try:
            self.sock.bind((0, groups))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[list[tuple[int, bytes]], bool]:
        """``(type, payload)`` of the messages queued now, and whether some were lost
        (ENOBUFS: the kernel's queue overflowed; or a read that did not parse)."""
        out: list[tuple[int, bytes]] = []
        lost = False
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: the queue overflowed and notifications were lost
                lost = True
                continue
            if not data:
                break
            try:
                for mtype, _seq, payload in messages(data):
                    if mtype == NLMSG_ERROR:
                        lost = True
                        break
                    out.append((mtype, payload))
            except MalformedError:
                lost = True  # a datagram we cannot read: count it as lost, re-read the state
        return out, lost

    def close(self) -> None:
        """Close our descriptor (also what a forked worker does with its copy)."""
        self.sock.close()
