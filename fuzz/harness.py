"""Fuzz targets: every parser and every role's receive path, driven by one byte string.

A role target reads its input as a script of events so that a coverage-guided fuzzer can reach
the states that only a sequence reaches (a qualified client, a relay peer waiting for its
bubble, a server's exhausted rate limit):

    event = kind:u8  src:u8  port:u16  length:u16  payload[length]

`kind % 3` is 0 for a UDP datagram from source `SOURCES[src % len(SOURCES)]`:`port` on socket
`src & 1`, 1 for a packet read from the tunnel, 2 for the clock moving `port` milliseconds
forward (timers fire).  A short tail becomes one last datagram, so a raw datagram is a valid
input too.  The same encoding (`encode`) seeds the corpus from the captured vectors in
`tests/vectors/`.

Each target checks the invariants an attacker must not break, not just "no exception":
nothing but an ICMPv6 Echo Request (hop limit < 255) leaves a server towards native IPv6,
and the peer table never outgrows its configured capacity nor its byte budget.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.config.model import EngineConfig
from engine.proto import wire
from engine.proto.addr import build_teredo, ipv6_pack
from engine.proto.client import ClientRole
from engine.proto.errors import ParseError
from engine.proto.relay import RelayRole
from engine.proto.role_protocol import Role
from engine.proto.server import ServerRole
from engine.proto.trailers import Trailers, build_trailers, parse_trailers, trailer_bytes

SERVER1 = "203.0.113.10"
SERVER2 = "203.0.113.11"
CLIENT_MAP = ("198.51.100.1", 50092)
RELAY_MAP = ("203.0.113.20", 3545)
NATIVE = "2001:db8:1::100"

SOURCES: tuple[str, ...] = (
    SERVER1, SERVER2, CLIENT_MAP[0], RELAY_MAP[0], "198.51.100.2",
    "10.0.0.1", "127.0.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.253",
)
"""UDP sources an input can pick: the lab's server, client and relay, and martians."""

PEER_CAP = 64
"""Peer table capacity given to the fuzzed client and relay: small, so the cap is reached."""

_HEADER = struct.Struct("!BBHH")


@dataclass(frozen=True)
class Event:
    kind: int  # 0 datagram, 1 tunnel packet, 2 time passes
    src: int
    port: int
    payload: bytes


def decode(data: bytes) -> Iterable[Event]:
    """Split an input into events; never raises, whatever the bytes."""
    i, n = 0, len(data)
    while i + _HEADER.size <= n:
        kind, src, port, length = _HEADER.unpack_from(data, i)
        i += _HEADER.size
        payload = data[i:i + length]
        i += length
        yield Event(kind % 3, src, port, payload)
    if i < n:
        yield Event(0, 0, 3544, data[i:])


def encode(events: Iterable[Event]) -> bytes:
    """The inverse of `decode`, for seeds and regression inputs."""
    out = bytearray()
    for e in events:
        out += _HEADER.pack(e.kind, e.src, e.port, len(e.payload)) + e.payload
    return bytes(out)


def source_index(ip: str) -> int:
    return SOURCES.index(ip) if ip in SOURCES else 0


# --------------------------------------------------------------------------- roles
def _tokens() -> Callable[[int], bytes]:
    state = [0]

    def token_bytes(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + k) & 0xFF for k in range(n))

    return token_bytes


def _bits(n: int) -> int:
    return 0x1234 & ((1 << n) - 1)


def make_server() -> ServerRole:
    cfg = EngineConfig(role="server", relay_type="server", path="fuzz.conf",
                       server_bind_address=SERVER1)
    return ServerRole.from_config(cfg, now=0.0)


def make_relay() -> RelayRole:
    cfg = EngineConfig(role="relay", relay_type="cone", path="fuzz.conf")
    return RelayRole.from_config(cfg, token_bytes=_tokens(), now=0.0, capacity=PEER_CAP)


def make_client() -> ClientRole:
    """A client that has qualified with SERVER1, so data paths are reachable at once."""
    cfg = EngineConfig(role="client", relay_type="client", path="fuzz.conf",
                       server_address=SERVER1)
    c = ClientRole.from_config(cfg, token_bytes=_tokens(), randbits=_bits, now=0.0,
                               capacity=PEER_CAP)
    c.handle_timer(0.0)
    rs = next((p for _, p, dst in c.udp_out if dst == (SERVER1, 3544)), None)
    c.udp_out.clear()
    if rs is not None:
        nonce = wire.parse_datagram(rs).auth.nonce
        ra = wire.router_advertisement(nonce, wire.Origin(*CLIENT_MAP), 0x20010000, SERVER1,
                                       1280, ipv6_pack("fe80::ffff:ffff:ffff"))
        c.receive_datagram(ra, (SERVER1, 3544), 0, 0.1)
        c.udp_out.clear()
        c.tun_out.clear()
    return c


def _drain(role: Role) -> None:
    role.udp_out.clear()
    role.tun_out.clear()
    role.raw6_out.clear()


def run_role(role: Role, data: bytes) -> int:
    """Feed one input script to `role`; returns the number of datagrams fed."""
    now = 1.0
    fed = 0
    for e in decode(data):
        if e.kind == 0:
            src = (SOURCES[e.src % len(SOURCES)], e.port)
            role.receive_datagram(e.payload, src, e.src & 1, now)
            fed += 1
        elif e.kind == 1:
            role.receive_tun_packet(e.payload, now)  # a server ignores it (RoleBase)
        else:
            now += e.port / 1000.0
            nxt = role.next_timer()
            if nxt is not None and nxt <= now:
                role.handle_timer(now)
        check_invariants(role)
        _drain(role)
    return fed


def check_invariants(role: Role) -> None:
    for pkt in role.raw6_out:
        if pkt[6] != wire.NH_ICMPV6 or pkt[40] != wire.ICMP6_ECHO_REQUEST or pkt[7] == 255:
            raise AssertionError(f"server sent a non-ping-test packet to native IPv6: {pkt.hex()}")
    peers = getattr(role, "peers", None)
    if peers is not None and len(peers) > PEER_CAP:
        raise AssertionError(f"peer table holds {len(peers)} > {PEER_CAP} peers")
    if peers is not None and not 0 <= peers.used <= peers.memory_limit:
        raise AssertionError(f"peer table accounts {peers.used} bytes, budget "
                             f"{peers.memory_limit}")


# --------------------------------------------------------------------------- parsers
def parse_all(data: bytes) -> None:
    """Every wire parser on the same bytes: a value or ParseError, never anything else."""
    try:
        t = wire.parse_datagram(data)
    except ParseError:
        t = None
    if t is not None:
        try:
            parse_trailers(trailer_bytes(data, t.trailer_len))
        except ParseError:
            pass
        for fn in (wire.parse_router_advertisement,):
            try:
                fn(t)
            except ParseError:
                pass
        try:
            wire.accept_router_advertisement(t, data[4:12].ljust(8, b"\0"), SERVER1)
        except ParseError:
            pass
    for fn in (wire.parse_icmpv6, wire.parse_echo):
        try:
            fn(data)
        except ParseError:
            pass
    try:
        parse_trailers(data)
    except ParseError:
        pass
    wire.ipv6_ok(data)
    wire.icmp_error_allowed(data)


TARGETS: dict[str, Callable[[], object] | None] = {
    "parsers": None,
    "server": make_server,
    "relay": make_relay,
    "client": make_client,
}


def one_input(target: str) -> Callable[[bytes], int]:
    """The function a fuzzer calls for `target`: a fresh role per input, so crashes replay."""
    if target == "parsers":
        def run(data: bytes) -> int:
            parse_all(data)
            return 1
        return run
    factory = TARGETS[target]
    if factory is None:
        raise KeyError(target)

    def run_target(data: bytes) -> int:
        return run_role(factory(), data)

    return run_target


# --------------------------------------------------------------------------- seeds
def _vector_payloads(path) -> list[tuple[str, int, bytes]]:
    out = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        src_ip, src_port = fields[1].rsplit(":", 1)
        out.append((src_ip, int(src_port), bytes.fromhex(fields[-1])))
    return out


def seeds(vectors_file) -> dict[str, list[bytes]]:
    """Corpus seeds per target from the captured lab datagrams."""
    frames = _vector_payloads(vectors_file)
    datagrams = [
        encode([Event(0, source_index(ip), port, payload)]) for ip, port, payload in frames
    ]
    native = ipaddress.IPv6Address(NATIVE).packed
    teredo = build_teredo(0x20010000, SERVER1, 0, CLIENT_MAP[1], CLIENT_MAP[0])
    from_tun = encode([Event(1, 0, 0, wire.echo_request(native, teredo, 1, 1, b"x" * 8)),
                       Event(2, 0, 2500, b""), Event(1, 0, 0, wire.bubble(native, teredo))])
    all_frames = b"".join(datagrams)
    # RFC 6081: bubbles carrying each trailer (engine.proto.trailers), from a peer's mapping
    other = build_teredo(0x20010000, SERVER1, 0, CLIENT_MAP[1] + 1, CLIENT_MAP[0])
    with_trailers = [
        wire.bubble(other, teredo) + build_trailers(tr)
        for tr in (Trailers(nonce=b"\x01\x02\x03\x04", random_port=40001),
                   Trailers(alternates=(("10.1.0.2", 41111), ("10.9.0.2", 41112))),
                   Trailers(nd=0, nonce=b"abcd"), Trailers(nd=1, unknown=((9, b"x"),)))
    ]
    ext = [encode([Event(0, source_index(CLIENT_MAP[0]), CLIENT_MAP[1] + 1, d)])
           for d in with_trailers]
    return {
        "parsers": [p for _, _, p in frames] + with_trailers,
        "server": [*datagrams, all_frames],
        "relay": [*datagrams, from_tun, all_frames],
        "client": [*datagrams, from_tun, all_frames, *ext],
    }
