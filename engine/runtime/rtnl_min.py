"""The rtnetlink requests, dumps and notifications the engine handles, built and read by
pyroute2's rtnetlink message classes over a plain ``NETLINK_ROUTE`` socket of our own.

pyroute2 is the project's netlink library (issue 15: "pyroute2 stays"), used leanly: only
`pyroute2.netlink` (``nlmsg``, ``nlmsgerr``) and two rtnetlink message classes (``ifaddrmsg``,
``rtmsg``; the link message is declared here, on ``nlmsg``) are imported, through
`engine.runtime.pyroute2_lean` so that the package ``__init__`` (every netlink family, NDB,
IPDB) never runs, and never ``pyroute2.iproute``, whose synchronous `IPRoute` pulls in asyncio
and ~240 modules.  The import happens once, in `load`: a relay's set-up runs it before the
fork, a client's parent right after its fork (docs/performance.md, "Keeping pyroute2,
leanly": where it costs least).

Two users: a client's first address on its fresh TUN (`configure_fresh`) and its later changes
and watches (`engine.runtime.netlink`, `engine.runtime.hostwatch`), and the whole of a relay's
rtnetlink work (`engine.runtime.relay_link`).
"""

from __future__ import annotations

import errno
import os
import socket
from collections import namedtuple
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU = 3, 4
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
RT_SCOPE_NOWHERE = 255
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RECV_SIZE = 1 << 16
_HEADER = 16  # struct nlmsghdr
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE

#: pyroute2's classes, filled by `load`: ``nlmsg``, ``nlmsgerr``, ``ifinfmsg``, ``ifaddrmsg``,
#: ``rtmsg``.
_classes: dict[str, Any] = {}


def load() -> None:
    """Import pyroute2's rtnetlink message classes (once).  Every other function here calls
    it, so it only matters *when* it runs first: a client's parent calls it right after its
    fork, while the worker sends its first Router Solicitation."""
    if _classes:
        return
    from engine.runtime import pyroute2_lean
    pyroute2_lean.install()
    with pyroute2_lean.lent_modules():  # pyroute2 uses a small part of four modules
        from pyroute2.netlink import nlmsg, nlmsgerr
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

    class ifinfmsg(nlmsg):
        """``struct ifinfomsg`` with the two attributes the engine sets or reads, on
        pyroute2's `nlmsg`.  pyroute2's own ``ifinfmsg`` module imports all of its link-kind
        plugins (bond, vxlan, can...), ``iw_event``, `multiprocessing`, `pickle` and
        `platform` at import time: 11 ms and 1.2 MiB for two attributes
        (docs/performance.md, "Keeping pyroute2, leanly").  Any other attribute of a kernel
        message is kept undecoded, as pyroute2 does with one it has no name for."""

        prefix = "IFLA_"
        fields = (("family", "B"), ("__align", "x"), ("ifi_type", "H"), ("index", "i"),
                  ("flags", "I"), ("change", "I"))
        nla_map = ((IFLA_IFNAME, "IFLA_IFNAME", "asciiz"), (IFLA_MTU, "IFLA_MTU", "uint32"))

    _classes.update(nlmsg=nlmsg, nlmsgerr=nlmsgerr, ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg,
                    rtmsg=rtmsg)
    # pyroute2 compiles each class's attribute tables on its first message (~0.5 ms for the
    # three): done here, before the fork, rather than on the way to the first address
    for mtype, kind, parse in ((RTM_NEWLINK, "ifinfmsg", parse_link),
                               (RTM_NEWADDR, "ifaddrmsg", parse_addr),
                               (RTM_NEWROUTE, "rtmsg", parse_route)):
        parse(mtype, _build(kind, mtype, 0, 0, {}, []))


def _build(kind: str, mtype: int, flags: int, seq: int, fields: dict[str, int],
           attrs: list[tuple[str, object]]) -> bytes:
    load()
    msg = _classes[kind]()
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _text6(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, address)


def _family_text(family: int, address: bytes) -> str:
    return socket.inet_ntop(family, address)


class RtnlError(OSError):
    """A request failed; ``str()`` names it, the interface and the reason (one string, like
    `netlink.NetlinkConfigError`, so both read the same in the log); `errno` is the kernel's
    code when it refused."""

    @classmethod
    def of(cls, what: str, name: str, code: int) -> RtnlError:
        err = cls(f"{what} on {name}: {os.strerror(code)} (errno {code})")
        err.errno = code
        return err

    @classmethod
    def of_socket(cls, what: str, e: OSError) -> RtnlError:
        """The socket itself failed (not the kernel refusing a request)."""
        err = cls(f"{what}: {e.strerror or e}")
        err.errno = e.errno
        return err


class Rtnl:
    """One rtnetlink socket for a handful of acknowledged requests, then closed.  Every
    failure is an `RtnlError` (an `OSError`) naming the step: the kernel's refusal with its
    errno, or the socket's own error."""

    def __init__(self, name: str) -> None:
        load()
        self.name = name
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      NETLINK_ROUTE)
        except OSError as e:
            raise RtnlError.of_socket("rtnetlink socket", e) from None
        try:
            self.sock.bind((0, 0))
        except OSError as e:
            self.sock.close()
            raise RtnlError.of_socket("rtnetlink socket", e) from None
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _send(self, what: str, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as e:
            raise RtnlError.of_socket(f"{what} on {self.name}", e) from None

    def _recv(self, what: str) -> bytes:
        try:
            return self.sock.recv(RECV_SIZE)
        except OSError as e:
            raise RtnlError.of_socket(f"{what} on {self.name}", e) from None

    def request(self, what: str, kind: str, mtype: int, flags: int, fields: dict[str, int],
                attrs: list[tuple[str, object]], ok_errnos: tuple[int, ...] = ()) -> None:
        """Send one request and wait for its acknowledgement; `RtnlError` on refusal."""
        self.seq += 1
        seq = self.seq
        self._send(what, _build(kind, mtype, flags, seq, fields, attrs))
        while True:
            for rtype, rseq, msg in messages(self._recv(what)):
                if rtype == NLMSG_ERROR and rseq == seq:
                    code = error_code(msg)
                    if code == 0 or -code in ok_errnos:
                        return
                    raise RtnlError.of(what, self.name, -code)

    def dump(self, what: str, kind: str, mtype: int,
             fields: dict[str, int]) -> list[tuple[int, bytes]]:
        """Every ``(type, message)`` of one dump request; `RtnlError` when it is refused."""
        self.seq += 1
        seq = self.seq
        self._send(what, _build(kind, mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, fields, []))
        out: list[tuple[int, bytes]] = []
        while True:
            for rtype, rseq, msg in messages(self._recv(what)):
                if rseq != seq:
                    continue
                if rtype == NLMSG_DONE:
                    return out
                if rtype == NLMSG_ERROR:
                    raise RtnlError.of(what, self.name, -error_code(msg))
                out.append((rtype, msg))

    def link_up(self, index: int, mtu: int) -> None:
        self.request("set MTU/up", "ifinfmsg", RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                     {"index": index, "flags": IFF_UP, "change": IFF_UP},
                     [("IFLA_MTU", mtu)])

    def link_down(self, index: int, ok_errnos: tuple[int, ...] = ()) -> None:
        self.request("set down", "ifinfmsg", RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                     {"index": index, "flags": 0, "change": IFF_UP}, [], ok_errnos=ok_errnos)

    def links(self) -> list[Link]:
        """Every link of the namespace."""
        got = self.dump("list links", "ifinfmsg", RTM_GETLINK, {"family": socket.AF_UNSPEC})
        return [link for link in (parse_link(t, m) for t, m in got) if link is not None]

    def addresses(self, family: int, index: int = 0) -> list[Addr]:
        """The addresses of `family` (of interface `index` only, when not 0)."""
        got = self.dump("list addresses", "ifaddrmsg", RTM_GETADDR, {"family": family})
        found = (parse_addr(t, m) for t, m in got)
        return [a for a in found if a is not None and (not index or a.index == index)]

    def delete_address(self, a: Addr, ok_errnos: tuple[int, ...] = ()) -> None:
        attrs: list[tuple[str, object]] = []
        if a.local is not None:
            attrs.append(("IFA_LOCAL", _family_text(a.family, a.local)))
        attrs.append(("IFA_ADDRESS",
                      _family_text(a.family, a.peer if a.peer is not None else a.address)))
        self.request("delete address", "ifaddrmsg", RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK,
                     {"family": a.family, "prefixlen": a.prefixlen, "index": a.index}, attrs,
                     ok_errnos=ok_errnos)

    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> list[Route]:
        """The routes of `family` in `table` (the kernel dumps every table: filtered here)."""
        got = self.dump("list routes", "rtmsg", RTM_GETROUTE, {"family": family})
        found = (parse_route(t, m) for t, m in got)
        return [r for r in found if r is not None and r.table == table]

    def delete_route(self, r: Route, ok_errnos: tuple[int, ...] = ()) -> None:
        attrs: list[tuple[str, object]] = []
        if r.dst_len:
            attrs.append(("RTA_DST", _family_text(r.family, r.dst)))
        if r.table >= 256:
            attrs.append(("RTA_TABLE", r.table))
        if r.oif is not None:
            attrs.append(("RTA_OIF", r.oif))
        if r.priority is not None:
            attrs.append(("RTA_PRIORITY", r.priority))
        self.request("delete route", "rtmsg", RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK,
                     {"family": r.family, "dst_len": r.dst_len,
                      "table": r.table if r.table < 256 else 0, "scope": RT_SCOPE_NOWHERE},
                     attrs, ok_errnos=ok_errnos)

    def add_address6(self, index: int, address: bytes, prefixlen: int) -> None:
        text = _text6(address)
        self.request(f"add address {text}/{prefixlen}", "ifaddrmsg", RTM_NEWADDR, _CREATE,
                     {"family": socket.AF_INET6, "prefixlen": prefixlen,
                      "scope": RT_SCOPE_UNIVERSE, "index": index},
                     [("IFA_ADDRESS", text)], ok_errnos=(errno.EEXIST,))

    def add_route6(self, index: int, dst: bytes, dst_len: int, metric: int,
                   ok_errnos: tuple[int, ...] = (errno.EEXIST,), what: str = "") -> None:
        text = _text6(dst)
        attrs: list[tuple[str, object]] = [("RTA_DST", text)] if dst_len else []
        attrs += [("RTA_OIF", index), ("RTA_PRIORITY", metric)]
        self.request(what or f"add route {text}/{dst_len}", "rtmsg", RTM_NEWROUTE, _CREATE,
                     {"family": socket.AF_INET6, "dst_len": dst_len, "table": RT_TABLE_MAIN,
                      "proto": RTPROT_STATIC, "scope": RT_SCOPE_UNIVERSE,
                      "type": RTN_UNICAST}, attrs, ok_errnos=ok_errnos)


# -- reading what the kernel sends -----------------------------------------------------------

class Addr(namedtuple("Addr", "type family prefixlen flags scope index address local peer")):
    """One RTM_NEWADDR/RTM_DELADDR.  `address` is the interface's own address (IFA_LOCAL,
    else IFA_ADDRESS); `local` and `peer` are those two attributes as sent (None when absent),
    for a delete that names the address exactly; `flags` is the 32-bit IFA_FLAGS when
    present, which supersedes the message's 8-bit field."""

    __slots__ = ()

    type: int
    family: int
    prefixlen: int
    flags: int
    scope: int
    index: int
    address: bytes
    local: bytes | None
    peer: bytes | None


class Link(namedtuple("Link", "type index flags name")):
    """One RTM_NEWLINK/RTM_DELLINK: index, IFF_* flags and name ("" when absent)."""

    __slots__ = ()

    type: int
    index: int
    flags: int
    name: str


class Route(namedtuple("Route", "family dst_len table protocol dst oif priority")):
    """One route of a dump; `dst` is empty for a default route."""

    __slots__ = ()

    family: int
    dst_len: int
    table: int
    protocol: int
    dst: bytes
    oif: int | None
    priority: int | None


class MalformedError(ValueError):
    """A netlink read that does not parse (truncated message or attribute)."""


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(type, seq, message)`` of every message in one netlink read, in order (`message` is
    the whole message, header included, for `parse_addr` and friends); a truncated or
    malformed one raises `MalformedError` after those before it."""
    load()
    nlmsg = _classes["nlmsg"]
    off = 0
    while off + _HEADER <= len(data):
        header = nlmsg(data, offset=off)
        try:
            header.decode()
        except Exception as e:  # pyroute2 raises struct.error and friends on short data
            raise MalformedError(f"netlink header at offset {off}: {e}") from None
        length = header["header"]["length"]
        if length < _HEADER or off + length > len(data):
            raise MalformedError(f"netlink message of {length} bytes at offset {off}")
        yield header["header"]["type"], header["header"]["sequence_number"], \
            data[off:off + length]
        off += (length + 3) & ~3
    if off < len(data):
        raise MalformedError(f"{len(data) - off} bytes after the last netlink message")


def error_code(message: bytes) -> int:
    """The (negative) errno of an NLMSG_ERROR, 0 for an acknowledgement."""
    return int(_decode("nlmsgerr", message)["error"])


def _decode(kind: str, message: bytes) -> Any:
    """pyroute2's decoding of one message.  pyroute2 does not refuse a bad attribute: it logs
    the failure and keeps the attribute's raw bytes, so `_text_attr` checks each value's type."""
    load()
    msg = _classes[kind](message)
    try:
        msg.decode()
    except Exception as e:  # struct.error (short body), KeyError/ValueError (bad layout)
        raise MalformedError(f"{kind}: {e}") from None
    return msg


def _text_attr(msg: Any, name: str, family: int) -> bytes | None:
    """An address attribute as packed bytes (pyroute2 gives text); None when absent."""
    value = msg.get_attr(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedError(f"{name} did not decode")
    try:
        return socket.inet_pton(family, value)
    except (OSError, ValueError):
        raise MalformedError(f"{name} {value!r} is not an address") from None


def _int_attr(msg: Any, name: str) -> int | None:
    value = msg.get_attr(name)
    if value is not None and not isinstance(value, int):
        raise MalformedError(f"{name} did not decode")
    return value


def parse_addr(mtype: int, message: bytes) -> Addr | None:
    """An address message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWADDR, RTM_DELADDR):
        return None
    msg = _decode("ifaddrmsg", message)
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return Addr(mtype, family, msg["prefixlen"], msg["flags"], msg["scope"], msg["index"],
                    b"", None, None)
    extended = _int_attr(msg, "IFA_FLAGS")
    flags = extended if extended is not None else msg["flags"]
    local, peer = _text_attr(msg, "IFA_LOCAL", family), _text_attr(msg, "IFA_ADDRESS", family)
    address = local if local is not None else peer if peer is not None else b""
    return Addr(mtype, family, msg["prefixlen"], flags, msg["scope"], msg["index"], address,
                local, peer)


def parse_link(mtype: int, message: bytes) -> Link | None:
    """A link message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWLINK, RTM_DELLINK):
        return None
    msg = _decode("ifinfmsg", message)
    name = msg.get_attr("IFLA_IFNAME")
    if name is not None and not isinstance(name, str):
        raise MalformedError("IFLA_IFNAME did not decode")
    return Link(mtype, msg["index"], msg["flags"], name or "")


def parse_route(mtype: int, message: bytes) -> Route | None:
    """A route message, or None for any other type; `MalformedError` when it is short."""
    if mtype not in (RTM_NEWROUTE, RTM_DELROUTE):
        return None
    msg = _decode("rtmsg", message)
    family = msg["family"]
    table = _int_attr(msg, "RTA_TABLE")
    dst = (_text_attr(msg, "RTA_DST", family)
           if family in (socket.AF_INET, socket.AF_INET6) else None)
    return Route(family, msg["dst_len"], table if table is not None else msg["table"],
                 msg["proto"], dst or b"", _int_attr(msg, "RTA_OIF"),
                 _int_attr(msg, "RTA_PRIORITY"))


def configure_fresh(index: int, name: str, mtu: int, addresses: list[tuple[bytes, int]],
                    route: tuple[bytes, int, int]) -> None:
    """MTU and up, `addresses` ``(address16, prefixlen)``, then `route` ``(dst16, len,
    metric)`` on interface `index`: what `netlink.TunnelInterface` does after its flush, for
    a device that has never been configured (nothing to flush).  `RtnlError` names the step."""
    with Rtnl(name) as nl:
        nl.link_up(index, mtu)
        for address, plen in addresses:
            nl.add_address6(index, address, plen)
        nl.add_route6(index, *route)




def split_datagram(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """``(type, message)`` of one netlink datagram, and whether all of it was read: an error
    message or one we cannot read ends it (the caller then reads the state again)."""
    out: list[tuple[int, bytes]] = []
    try:
        for mtype, _seq, payload in messages(data):
            if mtype == NLMSG_ERROR:
                return out, False
            out.append((mtype, payload))
    except MalformedError:
        return out, False
    return out, True


def decode_all(msgs: list[tuple[int, bytes]], decode: Callable[[int, bytes], T | None]
               ) -> tuple[list[T], bool]:
    """Each message through `decode` (None: not wanted), and whether all decoded: one that
    does not (`MalformedError`) is skipped and counted like a lost notification."""
    out: list[T] = []
    whole = True
    for mtype, payload in msgs:
        try:
            item = decode(mtype, payload)
        except MalformedError:
            whole = False
            continue
        if item is not None:
            out.append(item)
    return out, whole


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
        """``(type, message)`` of the messages queued now, and whether some were lost
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
            msgs, whole = split_datagram(data)
            out += msgs
            lost = lost or not whole
        return out, lost

    def read_decoded(self, decode: Callable[[int, bytes], T | None]) -> tuple[list[T], bool]:
        """`read`, each message through `decode` (see `decode_all`)."""
        msgs, lost = self.read()
        items, whole = decode_all(msgs, decode)
        return items, lost or not whole

    def close(self) -> None:
        """Close our descriptor (also what a forked worker does with its copy)."""
        self.sock.close()
