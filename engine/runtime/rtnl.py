"""A minimal rtnetlink client: the dozen messages the engine needs, on the stdlib alone.

Why not pyroute2: importing it costs 0.15-0.3 s (its package imports every netlink family,
asyncio and ssl), and that was most of our client's launch-to-address time (Debian's miredo
needs 0.02-0.05 s).  The engine only lists links, addresses and routes, and adds or removes
addresses and routes on its own interface; those are fixed C structs plus type-length-value
attributes (rtnetlink(7)), decoded here in a few lines.  Nothing here is imported lazily, so it
also works in a chrooted worker.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

# message types (linux/rtnetlink.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
# header flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
# multicast groups (the bind() bitmask)
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
# attributes
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_TABLE = 1, 4, 6, 15
# route constants
RT_TABLE_MAIN = 254
RTPROT_KERNEL, RTPROT_BOOT = 2, 3
RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 0, 255
RTN_UNICAST = 1
IFF_UP = 0x1

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_BODY = {
    RTM_NEWLINK: _IFINFOMSG, RTM_DELLINK: _IFINFOMSG,
    RTM_NEWADDR: _IFADDRMSG, RTM_DELADDR: _IFADDRMSG,
    RTM_NEWROUTE: _RTMSG, RTM_DELROUTE: _RTMSG,
}


class RtnlError(OSError):
    """The kernel refused a request; ``code`` is the errno (like pyroute2's NetlinkError)."""

    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(code, os.strerror(code) + (f" ({what})" if what else ""))
        self.code = code


@dataclass
class Message:
    """One decoded rtnetlink message: its type, the fixed header fields, the attributes."""

    type: int
    header: tuple[int, ...]
    attrs: dict[int, bytes] = field(default_factory=dict)

    def u32(self, attr: int) -> int | None:
        v = self.attrs.get(attr)
        return _U32.unpack(v)[0] if v is not None and len(v) == 4 else None

    def text(self, attr: int) -> str | None:
        v = self.attrs.get(attr)
        return v.split(b"\0", 1)[0].decode("utf-8", "replace") if v is not None else None


def _attr(kind: int, value: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    a = start
    while a + _RTATTR.size <= end:
        alen, atype = _RTATTR.unpack_from(data, a)
        if alen < _RTATTR.size or a + alen > end:
            break
        out.setdefault(atype & 0x3FFF, bytes(data[a + _RTATTR.size : a + alen]))
        a += (alen + 3) & ~3
    return out


def parse(data: bytes) -> Iterator[Message]:
    """Link, address and route messages of one netlink read (other types are skipped);
    a truncated message ends the read."""
    off, end = 0, len(data)
    while off + _NLMSG.size <= end:
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > end:
            return
        body = _BODY.get(mtype)
        start = off + _NLMSG.size
        if body is not None and length >= _NLMSG.size + body.size:
            yield Message(mtype, body.unpack_from(data, start),
                          _attrs(data, start + body.size, off + length))
        off += (length + 3) & ~3


def _address_bytes(family: int, text: str) -> bytes:
    return socket.inet_pton(family, text)


def _address_text(family: int, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return None


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mtu: int | None


@dataclass(frozen=True)
class Address:
    family: int
    index: int
    prefixlen: int
    scope: int
    flags: int
    address: str


@dataclass(frozen=True)
class Route:
    family: int
    dst: str | None
    dst_len: int
    oif: int | None
    priority: int | None
    table: int
    protocol: int


def link_of(m: Message) -> Link:
    _family, _type, index, flags, _change = m.header
    return Link(index, m.text(IFLA_IFNAME) or "", flags, m.u32(IFLA_MTU))


def address_of(m: Message) -> Address | None:
    family, plen, flags, scope, index = m.header
    raw = m.attrs.get(IFA_LOCAL) or m.attrs.get(IFA_ADDRESS)
    text = _address_text(family, raw)
    if text is None:
        return None
    extended = m.u32(IFA_FLAGS)
    return Address(family, index, plen, scope, extended if extended is not None else flags, text)


def route_of(m: Message) -> Route:
    family, dst_len, _src_len, _tos, table, proto, _scope, _type, _flags = m.header
    table32 = m.u32(RTA_TABLE)
    return Route(family, _address_text(family, m.attrs.get(RTA_DST)), dst_len, m.u32(RTA_OIF),
                 m.u32(RTA_PRIORITY), table32 if table32 is not None else table, proto)


class Rtnl:
    """A request/answer rtnetlink socket (no multicast groups); use as a context manager."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.settimeout(timeout)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), mtype, flags, self._seq, 0) + body)
        return self._seq

    def _answers(self, seq: int) -> Iterator[tuple[int, bytes, int, int]]:
        """(type, the whole read, offset, length) of each message answering ``seq``."""
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, mtype, _flags, mseq, _pid = _NLMSG.unpack_from(data, off)
                if length < _NLMSG.size:
                    raise RtnlError(_errno.EPROTO, "malformed netlink answer")
                if mseq == seq:
                    yield mtype, data, off, length
                off += (length + 3) & ~3

    def dump(self, mtype: int, body: bytes) -> list[Message]:
        seq = self._send(mtype, NLM_F_REQUEST | NLM_F_DUMP, body)
        out: list[Message] = []
        for t, data, off, length in self._answers(seq):
            if t == NLMSG_DONE:
                return out
            if t == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                raise RtnlError(code or _errno.EPROTO, "dump")
            out.extend(parse(data[off : off + length]))

    def request(self, mtype: int, flags: int, body: bytes) -> None:
        """Send a change and wait for its acknowledgement; raises `RtnlError`."""
        seq = self._send(mtype, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        for t, data, off, _length in self._answers(seq):
            if t == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                if code:
                    raise RtnlError(code)
                return

    # -- the engine's operations ---------------------------------------------------------------

    def links(self) -> list[Link]:
        return [link_of(m) for m in self.dump(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0))
                if m.type == RTM_NEWLINK]

    def addresses(self, family: int = 0, index: int | None = None) -> list[Address]:
        out = []
        for m in self.dump(RTM_GETADDR, _IFADDRMSG.pack(family, 0, 0, 0, 0)):
            a = address_of(m) if m.type == RTM_NEWADDR else None
            if a is not None and (not family or a.family == family) and (
                index is None or a.index == index
            ):
                out.append(a)
        return out

    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> list[Route]:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [r for r in (route_of(m) for m in self.dump(RTM_GETROUTE, body)
                            if m.type == RTM_NEWROUTE) if r.table == table]

    def link_set(self, index: int, *, mtu: int | None = None, up: bool | None = None) -> None:
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if mtu is not None:
            body += _attr(IFLA_MTU, _U32.pack(mtu))
        self.request(RTM_NEWLINK, 0, body)

    def _addr_body(self, index: int, address: str, prefixlen: int) -> bytes:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = _address_bytes(family, address)
        body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index)
        if family == socket.AF_INET:
            body += _attr(IFA_LOCAL, raw)
        return body + _attr(IFA_ADDRESS, raw)

    def addr_add(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                     self._addr_body(index, address, prefixlen))

    def addr_del(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_DELADDR, 0, self._addr_body(index, address, prefixlen))

    def _route_body(self, add: bool, family: int, dst: str | None, dst_len: int, oif: int,
                    priority: int | None, table: int) -> bytes:
        if add:
            head = _RTMSG.pack(family, dst_len, 0, 0, table, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                               RTN_UNICAST, 0)
        else:  # what `ip route del` sends: match on what is given
            head = _RTMSG.pack(family, dst_len, 0, 0, table, 0, RT_SCOPE_NOWHERE, 0, 0)
        body = head + _attr(RTA_TABLE, _U32.pack(table))
        if dst is not None and dst_len:
            body += _attr(RTA_DST, _address_bytes(family, dst))
        body += _attr(RTA_OIF, _U32.pack(oif))
        if priority is not None:
            body += _attr(RTA_PRIORITY, _U32.pack(priority))
        return body

    def route_add(self, family: int, dst: str, dst_len: int, oif: int, priority: int,
                  table: int = RT_TABLE_MAIN) -> None:
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
                     self._route_body(True, family, dst, dst_len, oif, priority, table))

    def route_del(self, family: int, dst: str | None, dst_len: int, oif: int,
                  priority: int | None, table: int = RT_TABLE_MAIN) -> None:
        self.request(RTM_DELROUTE, 0,
                     self._route_body(False, family, dst, dst_len, oif, priority, table))


def prefixlen_netmask(prefixlen: int) -> str:
    """Dotted IPv4 netmask of a prefix length (discovery interfaces' netmask)."""
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)
