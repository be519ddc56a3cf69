"""Events a role appends to `role.events` for the runtime to act on (see docs/contracts.md).

They are plain immutable records: the pure protocol layer only *reports* that the interface
should come up or that the mapping changed; the runtime owns the kernel side effects (TUN
addresses, routes, the hook script, logging).
"""

from __future__ import annotations

from .records import dataclass


@dataclass(frozen=True, slots=True)
class InterfaceUp:
    """The client qualified: configure `address` (16 bytes) with link MTU `mtu` on the tunnel."""

    address: bytes
    mtu: int


@dataclass(frozen=True, slots=True)
class InterfaceDown:
    """The tunnel address is no longer valid (qualification lost or role stopping)."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A human-facing state transition (e.g. ``"qualified"``), with a one-line detail."""

    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ServerLost:
    """The Teredo server stopped answering Router Solicitations."""


@dataclass(frozen=True, slots=True)
class MappingChanged:
    """The NAT mapping (ip, port) seen by the server changed; `old` is None on first learn."""

    old: tuple[str, int] | None
    new: tuple[str, int] | None


Event = InterfaceUp | InterfaceDown | StateChanged | ServerLost | MappingChanged

__all__ = [
    "Event",
    "InterfaceDown",
    "InterfaceUp",
    "MappingChanged",
    "ServerLost",
    "StateChanged",
]
