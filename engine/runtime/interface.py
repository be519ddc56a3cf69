"""The instance's own tunnel interface, as the privileged parent holds it across workers.

The TUN descriptor outlives the workers (a worker restart keeps the interface, its name and
its index; only a reload that changes the role or `InterfaceName` makes a new one); the
rtnetlink handle (`netlink.TunnelInterface`, a relay's `relay_link.RelayLink`) is made on
first use.

A device this object has just created and never configured needs no flush, so a client's
first qualified address goes through `rtnl_min.configure_fresh`: four requests, no dumps.
Every later change flushes first, through `netlink.TunnelInterface`, which takes over what
the fast path set (docs/performance.md).
"""

from __future__ import annotations

import socket

from engine.config.values import prefix_text
from engine.proto.addr import LL_CLIENT
from engine.runtime import rtnl_min
from engine.runtime.logsetup import get_logger
from engine.runtime.sysctl import prepare_interface
from engine.runtime.tun import Tun, open_tun

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.runtime.netlink import TunnelInterface
    from engine.runtime.relay_link import RelayLink

log = get_logger()

CLIENT_ROUTE_METRIC = 1029  # loses against the kernel's 1024: Teredo is the last resort


class Interface:
    """The TUN device (client, relay; a server has none) and its configuration."""

    def __init__(self) -> None:
        self.tun: Tun | None = None
        self._netlink: TunnelInterface | None = None
        self._fresh = False
        """The TUN was created here and nothing configured it yet: nothing to flush."""
        self._fast: tuple[bytes, int] | None = None
        """(address, MTU) set through `configure_fresh`, handed to the handle once made."""
        self._relay: RelayLink | None = None
        """A relay's interface: all of its rtnetlink work goes through `rtnl_min`."""

    def open(self, config: EngineConfig) -> None:
        """Create the TUN for `config`'s role if there is none yet; a relay's is configured
        once, here, as root (a client's follows its worker's qualification)."""
        if config.role == "server":
            return
        if self.tun is None:
            self.tun = open_tun(config.interface_name)
            prepare_interface(self.tun.name)
            self._fresh = True
        if config.role == "relay":
            if self._relay is None:
                from engine.runtime.relay_link import RelayLink

                self._relay = RelayLink(self.tun.index, self.tun.name)
            self._relay.setup(config.interface_mtu, config.prefix, fresh=self._fresh)
            self._fresh = False
            log.info(
                "interface %s up: MTU %d, route %s/32",
                self.tun.name,
                config.interface_mtu,
                prefix_text(config.prefix),
            )

    def netlink(self) -> TunnelInterface:
        """Our interface's rtnetlink handle for a client's changes after the first."""
        assert self.tun is not None
        if self._netlink is None:
            from engine.runtime.netlink import TunnelInterface

            self._netlink = TunnelInterface(self.tun.index, self.tun.name)
            if self._fast is not None:
                self._netlink.address, self._netlink.mtu = self._fast
                self._fast = None
        return self._netlink

    def client_up(self, address: bytes, mtu: int) -> None:
        """A client's worker qualified: its address and MTU on the link (errors logged)."""
        if self._fresh and self._netlink is None:
            self._client_up_fresh(address, mtu)
            return
        iface = self.netlink()
        if (iface.address, iface.mtu) == (address, mtu):
            return  # already so: no flush, no blip for open connections
        try:
            iface.client_up(address, mtu)
        except OSError as e:  # netlink.NetlinkConfigError
            log.error("%s", e)
            return
        log.info(
            "interface %s up: address %s, MTU %d",
            iface.name,
            socket.inet_ntop(socket.AF_INET6, address),
            mtu,
        )

    def _client_up_fresh(self, address: bytes, mtu: int) -> None:
        """The first address of a never-configured device, without a flush: nothing to read
        first, and launch -> address waits for nothing else."""
        assert self.tun is not None
        try:
            rtnl_min.configure_fresh(
                self.tun.index, self.tun.name, mtu, [(LL_CLIENT, 64), (address, 32)],
                (bytes(16), 0, CLIENT_ROUTE_METRIC))
        except OSError as e:
            log.error("%s", e)
            self._fresh = False  # maybe half configured: the next "up" flushes first
            return
        self._fresh = False
        self._fast = (address, mtu)
        log.info(
            "interface %s up: address %s, MTU %d",
            self.tun.name,
            socket.inet_ntop(socket.AF_INET6, address),
            mtu,
        )

    def client_down(self) -> None:
        """A client's address dies with its worker or its qualification (errors logged)."""
        if self._fast is not None:
            self.netlink()  # takes over the address set through rtnl_min
        if self._netlink is None or not self._netlink.address:
            return
        try:
            self._netlink.client_down()
            log.info("interface %s down", self._netlink.name)
        except OSError as e:  # netlink.NetlinkConfigError
            log.error("%s", e)

    def close(self) -> None:
        """Unconfigure and close the device: the kernel removes a non-persistent TUN."""
        if self._netlink is not None:
            self._netlink.teardown()
            self._netlink = None
        elif self._relay is not None:
            self._relay.teardown()
        self._relay = None
        self._fast = None
        self._fresh = False
        if self.tun is not None:
            self.tun.close()
            self.tun = None
