"""Local client discovery (spec §9): Teredo clients behind the same NAT find each other with
multicast bubbles and then talk directly over the LAN instead of hair-pinning through the NAT.

The runtime tells us the interfaces to announce on (``set_interfaces``) because enumerating
interfaces and matching ``DiscoveryInterfaces`` is I/O.  Announcements are emitted on socket
index 2 addressed to ``224.0.0.253:3544``: the runtime sends that payload **from the main
socket** once per discovery interface (``IP_MULTICAST_IF`` = the interface address, TTL 1, no
loop) -- miredo sends from the main socket so that the peer learns the mapping it must reply to.
Datagrams received on the discovery socket arrive with ``sock == 2``.
"""

from __future__ import annotations

from collections.abc import Callable

from .addr import ALL_NODES, TEREDO_PORT, ipv4_to_int, is_global_unicast_ipv4, mapped_ipv4_int

DISCOVERY_GROUP = "224.0.0.253"
DISCOVERY_DEST = (DISCOVERY_GROUP, TEREDO_PORT)
DISCOVERY_SOCK = 2
#: announcements every 200 + (0..99) s
INTERVAL_BASE = 200
INTERVAL_SPREAD = 100


class LocalDiscovery:
    """State of local discovery for one client: interfaces, netmask, the announcement timer."""

    __slots__ = (
        "_next",
        "_randbits",
        "enabled",
        "include_global",
        "interfaces",
        "netmask",
        "running",
    )

    def __init__(
        self,
        *,
        enabled: bool,
        netmask: str = "255.255.255.255",
        include_global: bool = False,
        randbits: Callable[[int], int],
    ) -> None:
        self.enabled = enabled
        self.netmask = ipv4_to_int(netmask)
        self.include_global = include_global
        self._randbits = randbits
        #: (name, ipv4 as int, netmask as int)
        self.interfaces: list[tuple[str, int, int]] = []
        self.running = False
        self._next: float | None = None

    def set_interfaces(self, ifaces: list[tuple[str, str, str]]) -> None:
        """``[(name, ipv4, netmask)]`` of multicast-capable interfaces.  Global addresses are
        skipped unless ``include_global`` (LocalDiscovery forced)."""
        chosen = []
        for name, ip, mask in ifaces:
            if not self.include_global and is_global_unicast_ipv4(ip):
                continue
            chosen.append((name, ipv4_to_int(ip), ipv4_to_int(mask)))
        self.interfaces = chosen

    @property
    def active(self) -> bool:
        return self.enabled and self.running and bool(self.interfaces)

    def start(self, now: float) -> None:
        """(Re)start on every InterfaceUp: announce at once, then every 200-299 s."""
        if self.enabled:
            self.running = True
            self._next = now

    def next_timer(self) -> float | None:
        return self._next if self.enabled and self.running else None

    def due(self, now: float) -> bool:
        """Whether an announcement is due; if so the next one is scheduled."""
        if self._next is None or not self.running or now < self._next:
            return False
        self._next = now + INTERVAL_BASE + self._randbits(16) % INTERVAL_SPREAD
        return True

    def in_subnet(self, ip: str) -> bool:
        """The UDP source lies in one of the discovery interfaces' subnets."""
        try:
            n = ipv4_to_int(ip)
        except ValueError:
            return False
        return any((n ^ addr) & mask == 0 for _, addr, mask in self.interfaces)

    def looks_local(self, s6: bytes, src: tuple[str, int], prefix4: bytes,
                    own_mapped_ip: str) -> bool:
        """§9 "looks local": discovery active, Teredo source with our prefix, the same public
        IPv4 (under DiscoveryNetmask), and a UDP source on one of our discovery subnets."""
        if not self.active or s6[0:4] != prefix4:
            return False
        if (mapped_ipv4_int(s6) ^ ipv4_to_int(own_mapped_ip)) & self.netmask:
            return False
        return self.in_subnet(src[0])

    @staticmethod
    def is_discovery_bubble(pkt: bytes, sock: int) -> bool:
        """A bubble received on the discovery socket, addressed to ff02::1."""
        return (
            sock == DISCOVERY_SOCK
            and pkt[6] == 59
            and pkt[4] == 0
            and pkt[5] == 0
            and pkt[24:40] == ALL_NODES
        )
