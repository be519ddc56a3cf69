"""The typed result of reading a config file, and the one exception the reader raises.

Everything downstream (roles, runtime, status output) takes an `EngineConfig`, never raw
directive strings, so value checks happen once, here, where the file and line are known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from engine.proto.records import dataclass, field

ROLES = ("client", "relay", "server")

DEFAULT_PREFIX = 0x20010000
"""2001::/32 as the big-endian int of its first 4 bytes (the same value as `proto.addr`)."""
DEFAULT_MTU = 1280
DEFAULT_FACILITY = "daemon"
DEFAULT_NETMASK = "255.255.255.255"


class ConfigError(ValueError):
    """Every problem found in one file, each a one-line `file:line: message`.

    The reader does not stop at the first problem: an operator fixing a file wants the whole
    list at once, so `problems` holds all of them and `str()` prints one per line.
    """

    def __init__(self, problems: list[str], warnings: list[str] | tuple[str, ...] = ()):
        self.problems = list(problems)
        self.warnings = list(warnings)
        """Warnings found along the way (not part of `str()`), printed next to the errors."""
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class EngineConfig:
    """One instance's configuration, with every directive resolved to its typed value.

    Fields of directives that do not apply to the role keep their neutral value (`None`, or
    `"disabled"` for discovery) so role code never has to ask which file format it came from.

    `local_discovery` differs from miredo on purpose: miredo's parser turns `forced` into
    `enabled` (a bug, §12.2 #2). Here `enabled` skips interfaces whose IPv4 address is global
    unicast (they need no local discovery: their peers reach them directly), while `forced`
    keeps them too, which is what the miredo documentation promises.
    See `discovery_includes_global`.
    """

    role: str
    relay_type: str
    path: str
    # client
    server_address: str | None = None
    server_address2: str | None = None
    server_host: str | None = None
    """`ServerAddress` (or the command-line server name) as written, so a client can
    re-resolve a name after losing its server; `server_address` is the address it had at load."""
    server_host2: str | None = None
    server_from_cli: bool = False
    local_discovery: str = "disabled"
    discovery_interfaces: re.Pattern[str] | None = None
    discovery_netmask: str = DEFAULT_NETMASK
    # relay and server
    prefix: int = DEFAULT_PREFIX
    interface_mtu: int = DEFAULT_MTU
    # client and relay
    interface_name: str | None = None
    """None leaves the name to the kernel (`tunN`), which is what miredo's code does."""
    bind_address: str = "0.0.0.0"
    bind_port: int = 0
    # server
    server_bind_address: str | None = None
    server_bind_address2: str | None = None
    server_rate_limit: bool = True
    """`ServerRateLimit off`: no rate limiting at all, as miredo-server."""
    server_rates: tuple[tuple[str, float | None, float], ...] = ()
    """(`ServerLimits` field, rate or None for off, burst) for each rate directive given;
    the ones not given keep the role's defaults."""
    server_rate_sources: int | None = None
    # client and relay (teredo-engine's)
    peer_memory_limit: int | None = None
    """`PeerMemoryLimit` in bytes: the peer table's byte budget; None keeps the role's
    default (relay 128M, client 4M; `engine.proto.peers`)."""
    # client (teredo-engine's RFC 6081 extensions; None for the other roles, on by default)
    symmetric_nat_support: bool | None = None
    """`SymmetricNatSupport` (RFC 6081 §3.1); docs/protocol.md §13."""
    port_preserving_nat: bool | None = None
    """`PortPreservingNat` (RFC 6081 §3.3)."""
    sequential_port_nat: bool | None = None
    """`SequentialPortNat` (RFC 6081 §3.4)."""
    hairpinning: bool | None = None
    """`Hairpinning` (RFC 6081 §3.5)."""
    server_load_reduction: bool | None = None
    """`ServerLoadReduction` (RFC 6081 §3.6)."""
    upnp_symmetric_nat: bool | None = None
    """`UpnpSymmetricNat` (RFC 6081 §3.2): map the Teredo port through the LAN's UPnP IGD
    (the worker, engine.runtime.upnp) and advertise the mapping; docs/protocol.md §13.8."""
    # all
    syslog_facility: str = DEFAULT_FACILITY
    status_socket: str | None = None
    worker_watchdog: int = 10
    """`WorkerWatchdog`: seconds the worker may leave its heartbeat unanswered before the
    parent restarts it; 0 (`off`) only reports (`engine.runtime.heartbeat`)."""
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Canonical directive name -> line of its (single) occurrence in `path`."""
    warnings: tuple[str, ...] = ()
    """`file:line: warning: ...` lines: accepted input that an operator may want to know about."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {self.role!r}")
        if not isinstance(self.lines, MappingProxyType):
            object.__setattr__(self, "lines", MappingProxyType(dict(self.lines)))

    def __getstate__(self) -> dict[str, object]:
        """Pickle support: the runtime ships a reloaded config to its worker as a pickle,
        and pickle cannot handle the read-only `lines` view itself."""
        state = dict(self.__dict__)
        state["lines"] = dict(self.lines)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "lines", MappingProxyType(dict(self.lines)))

    @property
    def directive_count(self) -> int:
        return len(self.lines)

    @property
    def discovery_enabled(self) -> bool:
        return self.local_discovery in ("enabled", "forced")

    @property
    def discovery_includes_global(self) -> bool:
        """`forced`: also announce on interfaces whose IPv4 address is global unicast."""
        return self.local_discovery == "forced"

    def line_of(self, directive: str) -> int | None:
        """Line of a directive (any spelling), None when it came from a default."""
        for name, line in self.lines.items():
            if name.lower() == directive.lower():
                return line
        return None

    def where(self, directive: str) -> str:
        """`file:line` of a directive for later messages (just `file` for a default value)."""
        line = self.line_of(directive)
        return f"{self.path}:{line}" if line is not None else self.path
