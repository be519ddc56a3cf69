"""The private parent<->worker protocol: one JSON object per line over a socketpair.

The worker handles untrusted network data, so everything it sends is treated as hostile: the
privileged parent accepts a short fixed list of requests, each with an exact set of keys and
strict value checks (the address must be inside the Teredo /32 or be the fixed client
link-local, the MTU must be 1280-65535), and it only ever applies them to its own interface.
The other direction (root parent -> worker) is trusted; a reloaded config travels as a pickle
there because the typed config object has no JSON form and the parent is the more privileged
side.
"""

from __future__ import annotations

import base64
import copyreg
import io
import json
import pickle
from types import MappingProxyType

from engine.config.values import prefix_text
from engine.proto.addr import (
    ipv4_pack,
    ipv6_pack,
    ipv6_text,
    is_link_local6,
    is_loopback6,
    is_multicast6,
    is_unspecified6,
)
from engine.proto.records import dataclass

MAX_LINE = 2048
MTU_MIN = 1280
MTU_MAX = 65535


class RequestError(ValueError):
    """A worker message the parent refuses; ``str()`` says which field and why."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker finished set-up (privileges dropped, role built)."""


@dataclass(frozen=True, slots=True)
class Up:
    """Configure the client interface: Teredo `address` (16 bytes) with link `mtu`."""

    address: bytes
    mtu: int


@dataclass(frozen=True, slots=True)
class Down:
    """Remove the client's addresses and routes and set the link down."""


@dataclass(frozen=True, slots=True)
class Reloaded:
    """Answer to a reload: `applied` False asks the parent to restart the worker."""

    applied: bool


@dataclass(frozen=True, slots=True)
class Pong:
    """The worker's answer to a heartbeat `ping`, sent from its loop: the loop turns."""


WorkerRequest = Ready | Up | Down | Reloaded | Pong

_KEYS: dict[str, frozenset[str]] = {
    "ready": frozenset({"op"}),
    "up": frozenset({"op", "address", "mtu"}),
    "down": frozenset({"op"}),
    "reloaded": frozenset({"op", "applied"}),
    "pong": frozenset({"op"}),
}


def encode(msg: dict[str, object]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def up_message(address: bytes, mtu: int) -> bytes:
    return encode({"op": "up", "address": ipv6_text(address), "mtu": mtu})


def _decode(line: bytes, limit: int, what: str, kind: str,
            keys: dict[str, frozenset[str]]) -> tuple[str, dict]:
    """One JSON object line whose ``op`` is a key of `keys` and whose keys are exactly
    ``keys[op]``; errors are prefixed with `what` (the line) or the op, `kind` names the op."""
    if len(line) > limit:
        raise RequestError(f"{what}: {len(line)} bytes is longer than {limit}")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"{what}: not JSON ({e})")
    if not isinstance(msg, dict):
        raise RequestError(f"{what}: not a JSON object")
    op = msg.get("op")
    if not isinstance(op, str) or op not in keys:
        raise RequestError(f"op: unknown {kind} {op!r}")
    if set(msg) != keys[op]:
        extra = sorted(set(msg) - keys[op])
        missing = sorted(keys[op] - set(msg))
        raise RequestError(f"{op}: unexpected keys {extra}, missing keys {missing}")
    return op, msg


def parse_worker_request(line: bytes, prefix32: int) -> WorkerRequest:
    """Validate one line from the worker against the instance's Teredo `prefix32`."""
    op, msg = _decode(line, MAX_LINE, "line", "request", _KEYS)
    if op == "ready":
        return Ready()
    if op == "down":
        return Down()
    if op == "pong":
        return Pong()
    if op == "reloaded":
        applied = msg["applied"]
        if not isinstance(applied, bool):
            raise RequestError("reloaded.applied: not a boolean")
        return Reloaded(applied)
    return Up(_checked_address(msg["address"], prefix32), _checked_mtu(msg["mtu"]))


def _checked_address(value: object, prefix32: int) -> bytes:
    if not isinstance(value, str) or len(value) > 64:
        raise RequestError("up.address: not an IPv6 address string")
    try:
        packed = ipv6_pack(value)
    except ValueError:
        raise RequestError(f"up.address: {value!r} is not an IPv6 address")
    if int.from_bytes(packed[:4], "big") != prefix32:
        raise RequestError(f"up.address: {ipv6_text(packed)} is outside the Teredo prefix "
                           f"{prefix_text(prefix32)}/32")
    return packed


def _checked_mtu(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError("up.mtu: not an integer")
    if not MTU_MIN <= value <= MTU_MAX:
        raise RequestError(f"up.mtu: {value} is outside {MTU_MIN}-{MTU_MAX}")
    return value


def _mappingproxy(d: dict) -> MappingProxyType:
    """Importable rebuild function: pickle cannot name the ``mappingproxy`` type itself."""
    return MappingProxyType(d)


def _reduce_mappingproxy(m: MappingProxyType) -> tuple[object, tuple[dict]]:
    return _mappingproxy, (dict(m),)


_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[MappingProxyType] = _reduce_mappingproxy  # EngineConfig.lines is read-only


def dump_config(config: object) -> bytes:
    """Pickle a config; a private dispatch table handles read-only mappings."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(config)
    return buf.getvalue()


def reload_message(config: object) -> bytes:
    """Parent -> worker: the new, already validated config object."""
    blob = base64.b64encode(dump_config(config)).decode()
    return encode({"op": "reload", "config": blob})


def kick_message() -> bytes:
    """Parent -> worker: the host's IPv4 addresses or links changed; re-qualify now.

    With local discovery on, a `discovery_message` with the fresh list goes just before it.
    """
    return encode({"op": "kick"})


def ping_message() -> bytes:
    """Parent -> worker: the heartbeat; the worker's loop answers `pong` when it reads it, so
    a worker that is stopped, stuck in a callback or deadlocked stays silent."""
    return encode({"op": "ping"})


PONG = encode({"op": "pong"})


def discovery_socket_message(open_: bool) -> bytes:
    """Parent -> worker: take the discovery socket that travels with this line (SCM_RIGHTS),
    or (`open_` False) close yours: no interface qualifies for local discovery any more.

    The parent opens it, not the worker: 3544 is a privileged port and the worker is
    unprivileged and chrooted.
    """
    return encode({"op": "discovery_socket", "open": open_})


def parse_parent_message(line: bytes) -> tuple[str, object]:
    """Decode a trusted parent line into (op, payload)."""
    msg = json.loads(line)
    op = msg.get("op")
    if op == "reload":
        return op, pickle.loads(base64.b64decode(msg["config"]))
    if op == "discovery_socket":
        return op, msg.get("open") is True
    return str(op), None


# -- host facts: parent -> worker, on the control socket --------------------------------------
#
# What the parent learns from rtnetlink (rtnetlink lives in the parent only) and the worker's
# role needs.  They travel on the control socket, applied by `engine.runtime.hostfacts` in the
# worker.  The parent is the trusted side, but a fact is still checked field by field: a
# mistake here would make the worker write packets from a wrong address or join a multicast
# group on a wrong interface.

MAX_FACTS = 256
"""At most this many addresses or interfaces in one fact (the rest is dropped by the parent:
the lists are sorted, so the choice is stable)."""
MAX_FACT_LINE = 64 * 1024
IFNAMSIZ = 16


@dataclass(frozen=True, slots=True)
class IcmpSources:
    """The relay's ICMPv6 error sources: the host's usable global IPv6 addresses, best
    first (``role.set_icmp_sources``)."""

    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DiscoveryInterfaces:
    """Local discovery's ``(name, ipv4, netmask)`` list: late after the first fork, and
    fresh before every kick when the host changed."""

    interfaces: tuple[tuple[str, str, str], ...]


HostFact = IcmpSources | DiscoveryInterfaces

_FACT_KEYS: dict[str, frozenset[str]] = {
    "icmp_sources": frozenset({"op", "addresses"}),
    "discovery": frozenset({"op", "interfaces"}),
}
FACT_OPS = frozenset(_FACT_KEYS)


def icmp_sources_message(addresses: list[bytes]) -> bytes:
    texts = [ipv6_text(a) for a in addresses[:MAX_FACTS]]
    return encode({"op": "icmp_sources", "addresses": texts})


def discovery_message(interfaces: list[tuple[str, str, str]]) -> bytes:
    return encode({"op": "discovery", "interfaces": [list(x) for x in interfaces[:MAX_FACTS]]})


def parse_host_fact(line: bytes) -> HostFact:
    """Validate one host-fact line; `RequestError` names the field."""
    op, msg = _decode(line, MAX_FACT_LINE, "fact", "fact", _FACT_KEYS)
    field = "addresses" if op == "icmp_sources" else "interfaces"
    items = msg[field]
    if not isinstance(items, list) or len(items) > MAX_FACTS:
        raise RequestError(f"{op}.{field}: not a list of at most {MAX_FACTS} entries")
    if op == "icmp_sources":
        return IcmpSources(tuple(_checked_source(x, i) for i, x in enumerate(items)))
    return DiscoveryInterfaces(tuple(_checked_interface(x, i) for i, x in enumerate(items)))


def _checked_source(value: object, i: int) -> bytes:
    where = f"icmp_sources.addresses[{i}]"
    if not isinstance(value, str) or len(value) > 64:
        raise RequestError(f"{where}: not an IPv6 address string")
    try:
        addr = ipv6_pack(value)
    except ValueError:
        raise RequestError(f"{where}: {value!r} is not an IPv6 address")
    if is_link_local6(addr) or is_multicast6(addr) or is_loopback6(addr) or is_unspecified6(addr):
        raise RequestError(
            f"{where}: {ipv6_text(addr)} is not a unicast address a router can reply from")
    return addr


def _contiguous(bits: int) -> bool:
    """Whether a 32-bit mask is ones then zeros (a netmask; its complement, zeros then ones,
    is the host-mask form, which miredo's peers also send)."""
    inverse = bits ^ 0xFFFFFFFF
    return inverse & (inverse + 1) == 0


def _checked_interface(value: object, i: int) -> tuple[str, str, str]:
    where = f"discovery.interfaces[{i}]"
    if not isinstance(value, list) or len(value) != 3 or not all(
        isinstance(x, str) for x in value
    ):
        raise RequestError(f"{where}: not a [name, ipv4, netmask] list of strings")
    name, ip, mask = value
    if not 0 < len(name) < IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise RequestError(f"{where}.name: {name!r} is not an interface name")
    try:
        ipv4_pack(ip)
    except ValueError:
        raise RequestError(f"{where}.ipv4: {ip!r} is not an IPv4 address")
    try:
        bits = int.from_bytes(ipv4_pack(mask), "big")
    except ValueError:
        raise RequestError(f"{where}.netmask: {mask!r} is not a dotted netmask")
    if not _contiguous(bits) and not _contiguous(bits ^ 0xFFFFFFFF):
        raise RequestError(f"{where}.netmask: {mask!r} is not a netmask")
    return name, ip, mask


class LineBuffer:
    """Reassemble lines from stream reads; refuses to buffer more than `limit` bytes."""

    def __init__(self, limit: int = MAX_LINE * 64) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > self._limit:
                self._buf.clear()
                raise RequestError(f"line: more than {self._limit} bytes without a newline")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        return [bytes(x) for x in lines if x]
