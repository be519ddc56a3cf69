"""The seam between a sans-I/O role and the runtime that drives it (docs/contracts.md §1).

`Role` (`engine.proto.role_protocol`) is everything the runtime's worker (and its host-facts
handler) calls on a client, relay or server, so the runtime never has to ask a role what it
can do: a role that has no use for a call still answers it.  `RoleBase` holds those
answers, each a deliberate no-op that says why it is right for a role that does not
override it.

Inputs are method calls; outputs are appended to lists the runtime drains after every batch
(a `list.append` is the cheapest thing the hot path can do, and it keeps the role free of
callbacks into I/O code).
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:  # a type only: engine.proto never imports engine.config at run time
    from typing import Any

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
    "RoleBase",
    "UdpDatagram",
]
