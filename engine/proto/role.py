"""The seam between a sans-I/O role and the runtime that drives it (docs/contracts.md §1).

`Role` is everything the runtime's worker (and its host-facts handler) calls on a client,
relay or server, so the runtime never has to ask a role what it can do: a role that has no
use for a call still answers it.  `RoleBase` holds those answers, each a deliberate no-op
that says why it is right for a role that does not override it.

Inputs are method calls; outputs are appended to lists the runtime drains after every batch
(a `list.append` is the cheapest thing the hot path can do, and it keeps the role free of
callbacks into I/O code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .counters import Counters

if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from engine.config.model import EngineConfig

Endpoint = tuple[str, int]
"""A UDP endpoint ``(ipv4, port)``."""
UdpDatagram = tuple[int, bytes, Endpoint]
"""``(socket index, payload, destination)`` in `Role.udp_out`."""
DiscoveryInterface = tuple[str, str, str]
"""``(name, ipv4, netmask)`` of an interface local discovery runs on."""

PEERS_LISTED = 1000
"""Most peers one `peers` status answer lists: the answer is written while the packet path
waits, and a relay may know a million peers."""


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


class RoleBase:
    """The `Role` calls a role may have no use for, answered as "nothing to do"."""

    def receive_tun_packet(self, pkt: bytes, now: float) -> None:
        """A role without a TUN device (the server) never gets one; nothing to forward."""

    def list_peers(self, now: float, limit: int) -> dict[str, Any]:
        """A role that keeps no peers (the stateless server) lists none."""
        return {"count": 0, "trusted": 0, "truncated": False, "peers": []}

    def kick(self, now: float) -> None:
        """Only a client qualifies; others have nothing to redo when the host's IPv4 moves."""

    def set_discovery_interfaces(self, ifaces: list[DiscoveryInterface]) -> None:
        """Only a client runs local discovery."""

    def restart_discovery(self, now: float) -> None:
        """Only a client runs local discovery."""

    def set_icmp_sources(self, sources: list[bytes]) -> None:
        """Only a relay writes ICMPv6 errors that must reach native hosts."""

    def reconfigure(self, config: EngineConfig, now: float) -> bool:
        """No field can change in place: the runtime starts a new worker, which is always
        correct, only slower."""
        return False

    def set_local_endpoint(self, ip: str, port: int, extra_sockets: bool) -> None:
        """Only a client's RFC 6081 extensions need to know where its socket is bound."""

    def set_upnp_mapping(self, mapping: tuple[str, int, int] | None, why: str) -> None:
        """Only a client advertises a UPnP mapping."""


__all__ = [
    "PEERS_LISTED",
    "DiscoveryInterface",
    "Endpoint",
    "Role",
    "RoleBase",
    "UdpDatagram",
]
