"""`Role`: the calls the runtime makes on a role, as a protocol (docs/contracts.md §1).

Its own module because a `typing.Protocol` needs `typing`, which the engine keeps unimported
at run time (about 0.5 MiB in every instance's tree, docs/performance.md): the runtime names
`Role` in annotations only, and the tests check every role against it with `isinstance`.
The plain types and the no-op answers (`RoleBase`) stay in `engine.proto.role`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .counters import Counters
from .role import DiscoveryInterface, Endpoint, UdpDatagram

if TYPE_CHECKING:
    from engine.config.model import EngineConfig


@runtime_checkable
class Role(Protocol):
    """What the runtime calls on a role; times are `now`, seconds on a monotonic clock."""

    udp_out: list[UdpDatagram]
    """Socket 0: the main socket (client, relay) or the server's primary; 1: the server's
    secondary; 2: a client's local-discovery announcement (sent from socket 0 per interface)."""
    tun_out: list[bytes]
    """IPv6 packets for the TUN device."""
    raw6_out: list[bytes]
    """Whole IPv6 packets for the server's raw IPv6 socket."""
    events: list[Any]
    """`engine.proto.events` dataclasses (interface up/down, state changes...)."""
    counters: Counters

    def receive_datagram(self, data: bytes, src: Endpoint, sock: int, now: float) -> None:
        """A UDP datagram that arrived on socket `sock` from `src`."""

    def receive_tun_packet(self, pkt: bytes, now: float) -> None:
        """An IPv6 packet read from the TUN device (the runtime drops runts under 40 bytes)."""

    def handle_timer(self, now: float) -> None:
        """`next_timer()` is due (or past)."""

    def next_timer(self) -> float | None:
        """The absolute time the role wants `handle_timer` next; None for never."""

    def status(self) -> dict[str, Any]:
        """JSON-ready role status for the `status` command; times monotonic."""

    def list_peers(self, now: float, limit: int) -> dict[str, Any]:
        """The `peers` command: ``count``, ``trusted``, ``truncated`` and up to `limit` rows
        in ``peers`` (`Peer.describe`); times monotonic."""

    def kick(self, now: float) -> None:
        """The host's IPv4 addresses changed: re-qualify at once."""

    def set_discovery_interfaces(self, ifaces: list[DiscoveryInterface]) -> None:
        """The interfaces local discovery runs on now."""

    def restart_discovery(self, now: float) -> None:
        """Announce on the LAN now: the first interface list came after qualification."""

    def set_icmp_sources(self, sources: list[bytes]) -> None:
        """The host's usable global IPv6 addresses, best first (sources of ICMPv6 errors)."""

    def reconfigure(self, config: EngineConfig, now: float) -> bool:
        """SIGHUP with a changed config; False asks the runtime for a new worker."""

    def set_local_endpoint(self, ip: str, port: int, extra_sockets: bool) -> None:
        """The main socket's local address; `extra_sockets`: the runtime opens the sockets
        a client asks for in its `socket_requests` list (RFC 6081, docs/contracts.md §1)."""

    def set_upnp_mapping(self, mapping: tuple[str, int, int] | None, why: str) -> None:
        """The UDP mapping (external IPv4, port, lease seconds) of the main socket's port on
        the LAN's UPnP IGD, or None and why not (RFC 6081 §3.2, docs/protocol.md §13.8)."""


__all__ = ["Role"]
