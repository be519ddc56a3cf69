"""The parent's view of the host over rtnetlink, for the role its worker runs.

A client re-qualifies at once when the host's IPv4 addresses or links change (`AddressWatcher`);
a relay's ICMPv6 errors need one of the host's global IPv6 addresses as their source
(`SourceAddressWatcher`).  Both are rtnetlink subscriptions (`rtnl_min.Subscription`), so
they live in the parent, and what they learn reaches the worker through the callbacks (as a
kick or a host fact).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from engine.runtime.logsetup import get_logger
from engine.runtime.loop import Loop

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from engine.runtime.netlink import AddressWatcher
    from engine.runtime.relay_link import SourceAddressWatcher

log = get_logger()


class HostWatch:
    """The subscriptions one role needs, read from the parent's loop."""

    def __init__(
        self,
        loop: Loop,
        on_change: Callable[[str], None],
        on_sources: Callable[[list[bytes]], None],
    ) -> None:
        """`on_change(reason)`: the host's IPv4 view changed (client); `on_sources(list)`: the
        usable ICMPv6 error sources changed (relay)."""
        self.loop = loop
        self.on_change = on_change
        self.on_sources = on_sources
        self.addresses: AddressWatcher | None = None
        self.sources: SourceAddressWatcher | None = None

    def follow(self, role: str, own_index: int | None) -> None:
        """Subscribe to what `role` needs, ignoring our own interface `own_index`; drop the
        rest.  A client's parent makes its first call after forking its worker."""
        want_addresses = role == "client"
        want_sources = role == "relay"
        if self.addresses is not None and (
            not want_addresses or self.addresses.own_index != own_index
        ):
            self.loop.remove_reader(self.addresses.fileno())
            self.addresses.close()
            self.addresses = None
        if self.sources is not None and (not want_sources or self.sources.own_index != own_index):
            self.loop.remove_reader(self.sources.fileno())
            self.sources.close()
            self.sources = None
        if want_addresses and self.addresses is None:
            from engine.runtime.netlink import AddressWatcher

            try:
                self.addresses = AddressWatcher(own_index)
                self.loop.add_reader(self.addresses.fileno(), self._on_addresses)
            except OSError as e:
                log.warning("not watching host address changes: %s", e)
        if want_sources and self.sources is None:
            from engine.runtime.relay_link import SourceAddressWatcher

            try:
                self.sources = SourceAddressWatcher(own_index)
                self.loop.add_reader(self.sources.fileno(), self._on_sources)
            except OSError as e:
                log.warning("ICMPv6 errors will have a link-local source: %s", e)
            else:
                self._log_sources()

    def icmp_sources(self) -> list[bytes] | None:
        """The relay's current ICMPv6 error sources; None when they are not watched."""
        return None if self.sources is None else self.sources.sources

    def close(self) -> None:
        for watcher in (self.addresses, self.sources):
            if watcher is not None:
                watcher.close()
        self.addresses = self.sources = None

    def close_in_child(self) -> None:
        """In the forked worker: drop its copies of the descriptors."""
        for watcher in (self.addresses, self.sources):
            if watcher is not None:
                watcher.close_in_child()

    def _on_addresses(self) -> None:
        assert self.addresses is not None
        reasons = self.addresses.drain()
        if reasons:
            self.on_change(reasons[0])

    def _on_sources(self) -> None:
        assert self.sources is not None
        if self.sources.drain():
            self._log_sources()
            self.on_sources(self.sources.sources)

    def _log_sources(self) -> None:
        assert self.sources is not None
        if self.sources.sources:
            text = ", ".join(socket.inet_ntop(socket.AF_INET6, a) for a in self.sources.sources)
            log.info("ICMPv6 errors from %s", text)
        else:
            log.warning(
                "no global IPv6 address on this host: ICMPv6 errors about forwarded "
                "packets cannot reach their senders"
            )
