"""Read a config file into an `EngineConfig`, collecting every problem with its place.

Order of work: tokenise (syntax.py) -> names (unknown, duplicate) -> role (from RelayType, or
a ServerBindAddress for unchanged miredo-server.conf files) -> which directives the role allows
-> typed values -> role requirements (server addresses, global unicast checks, defaults).

Unknown directives are errors (a typo must not go unnoticed); duplicates and directives of
another mode are warnings, because miredo runs with them ("Superfluous directive") and its
files must work unchanged.
"""

from __future__ import annotations

from engine.proto.addr import is_global_unicast_ipv4 as _is_global_unicast_ipv4
from engine.proto.addr import secondary_server_address
from engine.proto.peers import MAX_MEMORY_LIMIT, MIN_MEMORY_LIMIT

from . import values as v
from .directives import (
    CLIENT,
    EXTENSION_DIRECTIVES,
    LOCAL_DISCOVERY,
    MAX_RATE_SOURCES,
    RELAY_TYPE_WORDS,
    ROLE_OF_RELAY_TYPE,
    SERVER,
    SERVER_RATE_DIRECTIVES,
    lookup,
    roles_text,
    suggestion,
)
from .model import ConfigError, EngineConfig
from .source import read_config_bytes
from .syntax import Entry, split_lines

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any


class _Reader:
    """State of one parse: the entries kept and the problems found so far."""

    def __init__(self, path: str, resolver: v.Resolver | None):
        self.path = path
        self.resolver = resolver
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.found: dict[str, Entry] = {}  # canonical name -> first occurrence

    def error(self, entry: Entry | None, message: str) -> None:
        where = f"{self.path}:{entry.line}" if entry is not None else self.path
        self.problems.append(f"{where}: {message}")

    def warn(self, entry: Entry, message: str) -> None:
        self.warnings.append(f"{self.path}:{entry.line}: warning: {message}")

    # -- names ---------------------------------------------------------------------------
    def collect(self, entries: list[Entry]) -> None:
        for entry in entries:
            directive = lookup(entry.name)
            if directive is None:
                hint = suggestion(entry.name)
                did_you_mean = f" (did you mean {hint}?)" if hint else ""
                self.error(entry, f"unknown directive {entry.name!r}{did_you_mean}")
                continue
            entry.name = directive.name
            first = self.found.get(directive.name)
            if first is not None:
                # miredo: "Superfluous directive"; the first occurrence is the one used
                self.warn(
                    entry,
                    f"superfluous directive {directive.name}: ignored, the one at line "
                    f"{first.line} is used",
                )
                continue
            self.found[directive.name] = entry
            if entry.value is None:
                self.error(entry, f"{directive.name}: missing value (expected {directive.expects})")
            elif entry.value.startswith("#"):
                self.error(
                    entry,
                    f"{directive.name}: missing value (expected {directive.expects}); "
                    "'#' starts a comment only at the beginning of a line",
                )
            elif entry.extra and not entry.extra[0].startswith("#"):
                self.warn(
                    entry,
                    f"{directive.name}: ignoring {' '.join(entry.extra)!r} after the value "
                    "(only the first word is used; start a comment with '#')",
                )

    def value_of(self, name: str) -> tuple[Entry, str] | None:
        """The entry and its value when present and usable (no missing/'#' value)."""
        entry = self.found.get(name)
        if entry is None or entry.value is None or entry.value.startswith("#"):
            return None
        return entry, entry.value

    # -- role ----------------------------------------------------------------------------
    def role(self) -> tuple[str | None, str | None, str]:
        """(role, relay_type, why); role None when RelayType is unusable."""
        got = self.value_of("RelayType")
        if got is not None:
            entry, text = got
            try:
                word = v.parse_keyword(text, RELAY_TYPE_WORDS)
            except v.BadValue as e:
                self.error(entry, f"RelayType: {e}")
                return None, None, ""
            if word == "restricted":
                self.warn(
                    entry,
                    "RelayType restricted is deprecated: a relay behind a restricted NAT "
                    "cannot answer peers it has not contacted first; prefer cone with a "
                    "forwarded port",
                )
            return ROLE_OF_RELAY_TYPE[word], word, f"RelayType {word} at line {entry.line}"
        if "RelayType" in self.found:  # present but without a value: already reported
            return None, None, ""
        if "ServerBindAddress" in self.found:
            line = self.found["ServerBindAddress"].line
            return SERVER, "server", f"ServerBindAddress at line {line} makes it a server config"
        return CLIENT, "client", "no RelayType, so client mode"

    def check_roles(self, role: str, why: str) -> None:
        """Directives of another mode are ignored with a warning, as miredo does ("Superfluous
        directive"), so miredo.conf files that keep e.g. a ServerAddress in relay mode run
        unchanged; `--check --strict` turns this into a failure like miredo-checkconf."""
        for name, entry in list(self.found.items()):
            directive = lookup(name)
            assert directive is not None
            if role not in directive.roles:
                self.warn(
                    entry,
                    f"superfluous directive {name}: ignored, it applies to "
                    f"{roles_text(directive.roles)}, not to this {role} config ({why})",
                )
                del self.found[name]

    # -- values --------------------------------------------------------------------------
    def parse(self, name: str, parser: Any, *args: Any) -> Any:
        """Run a value parser on a directive; None (and a problem) when absent or bad."""
        got = self.value_of(name)
        if got is None:
            return None
        entry, text = got
        try:
            return parser(text, *args)
        except v.BadValue as e:
            self.error(entry, f"{name}: {e}")
            return None

    def check_global(
        self, name: str, address: str | None, text: str | None, from_cli: bool = False
    ) -> bool:
        if address is None or _is_global_unicast_ipv4(address):
            return True
        shown = address if text in (None, address) else f"{text} ({address})"
        what = "a Teredo server address"
        entry = self.found.get(name)
        if entry is None or from_cli:
            self.problems.append(
                f"{self.path}: server name from the command line: {shown} cannot be "
                f"{what}: it is not a global unicast IPv4 address"
            )
        else:
            self.error(
                entry, f"{name}: {shown} cannot be {what}: not a global unicast IPv4 address"
            )
        return False


def _resolve_cli(reader: _Reader, server_name: str) -> str | None:
    try:
        return v.parse_ipv4_host(server_name, reader.resolver or v.system_resolver)
    except v.BadValue as e:
        reader.problems.append(f"{reader.path}: server name from the command line: {e}")
        return None


def parse_config(
    data: bytes | str,
    path: str,
    *,
    server_name: str | None = None,
    resolver: v.Resolver | None = None,
) -> EngineConfig:
    """Parse the text of one file. `resolver` defaults to getaddrinfo(AF_INET).

    A `server_name` (the command line's positional argument) replaces `ServerAddress` for a
    client and `ServerBindAddress` for a server. As in miredo-server, it also replaces the
    file's secondary address: the secondary becomes primary + 1, since a secondary from the
    file belonged to the file's primary. The replaced directives are still checked for syntax
    but never resolved, so a stale name in the file cannot block start-up.
    """
    if isinstance(data, str):
        data = data.encode()
    resolver = resolver or v.system_resolver
    reader = _Reader(path, resolver)
    lines = split_lines(data, path)
    reader.problems.extend(lines.problems)
    reader.warnings.extend(lines.warnings)
    reader.collect(lines.entries)
    role, relay_type, why = reader.role()
    if role is not None:
        reader.check_roles(role, why)

    fields: dict[str, Any] = {}
    facility = reader.parse("SyslogFacility", v.parse_facility)
    if facility is not None:
        fields["syslog_facility"] = facility
    status_socket = reader.parse("StatusSocket", v.parse_socket_path)
    if status_socket is not None:
        fields["status_socket"] = status_socket
    watchdog = reader.parse("WorkerWatchdog", _parse_watchdog)
    if watchdog is not None:
        fields["worker_watchdog"] = watchdog
    _relay_and_server_values(reader, fields)
    _client_and_relay_values(reader, fields)
    _client_values(reader, fields, role, server_name)
    _server_values(reader, fields, role, server_name)
    _server_rate_values(reader, fields)

    if reader.problems:
        raise ConfigError(_by_line(reader.problems, path), _by_line(reader.warnings, path))
    assert role is not None and relay_type is not None
    return EngineConfig(
        role=role,
        relay_type=relay_type,
        path=path,
        lines={name: entry.line for name, entry in reader.found.items()},
        warnings=tuple(_by_line(reader.warnings, path)),
        **fields,
    )


def _relay_and_server_values(reader: _Reader, fields: dict[str, Any]) -> None:
    got = reader.parse("Prefix", v.parse_prefix)
    if got is not None:
        prefix, more_bits = got
        fields["prefix"] = prefix
        if more_bits:
            reader.warn(
                reader.found["Prefix"],
                f"Prefix: only the first 32 bits are used ({v.prefix_text(prefix)}/32)",
            )
    mtu = reader.parse("InterfaceMTU", v.parse_mtu)
    if mtu is not None:
        fields["interface_mtu"] = mtu


def _client_and_relay_values(reader: _Reader, fields: dict[str, Any]) -> None:
    name = reader.parse("InterfaceName", v.parse_ifname)
    if name is not None:
        fields["interface_name"] = name
    budget = reader.parse("PeerMemoryLimit", v.parse_size, MIN_MEMORY_LIMIT, MAX_MEMORY_LIMIT)
    if budget is not None:
        fields["peer_memory_limit"] = budget
    bind = reader.parse("BindAddress", v.parse_ipv4_host, reader.resolver)
    if bind is not None:
        fields["bind_address"] = bind
    port = reader.parse("BindPort", v.parse_port)
    if port is not None:
        fields["bind_port"] = port


def _client_values(
    reader: _Reader, fields: dict[str, Any], role: str | None, server_name: str | None
) -> None:
    discovery = reader.parse("LocalDiscovery", v.parse_keyword, LOCAL_DISCOVERY)
    if role == CLIENT:
        fields["local_discovery"] = discovery or "enabled"
    if discovery == "forced":
        reader.warn(
            reader.found["LocalDiscovery"],
            "LocalDiscovery forced also announces on interfaces with a global IPv4 address "
            "(miredo treats forced like enabled)",
        )
    for directive, name in EXTENSION_DIRECTIVES.items():
        on = reader.parse(directive, v.parse_on_off)
        if role == CLIENT:
            fields[name] = True if on is None else on
    pattern = reader.parse("DiscoveryInterfaces", v.parse_regex)
    if pattern is not None:
        fields["discovery_interfaces"] = pattern
    netmask = reader.parse("DiscoveryNetmask", v.parse_netmask)
    if netmask is not None:
        fields["discovery_netmask"] = netmask

    # Addresses the command line overrides are only syntax-checked (resolver None).
    file_resolver = None if server_name else reader.resolver
    primary = reader.parse("ServerAddress", v.parse_ipv4_host, file_resolver)
    secondary = reader.parse("ServerAddress2", v.parse_ipv4_host, file_resolver)
    if role != CLIENT:
        return
    if server_name:
        host, host2 = server_name, None
        primary, secondary = _resolve_cli(reader, server_name), None
        fields["server_from_cli"] = True
    else:
        host = reader.found["ServerAddress"].value if "ServerAddress" in reader.found else None
        host2 = reader.found["ServerAddress2"].value if "ServerAddress2" in reader.found else None
        if "ServerAddress" not in reader.found:
            reader.problems.append(
                f"{reader.path}: ServerAddress is required in client mode "
                "(or give a server name on the command line)"
            )
    if primary is None:
        return
    if not reader.check_global("ServerAddress", primary, host, bool(server_name)):
        return
    if secondary is None and host2 is None:
        default2 = secondary_server_address(primary)
        if default2 is not None and _is_global_unicast_ipv4(default2):
            secondary = default2
    elif secondary is not None and not reader.check_global("ServerAddress2", secondary, host2):
        return
    fields.update(
        server_address=primary, server_address2=secondary, server_host=host, server_host2=host2
    )


def _server_values(
    reader: _Reader, fields: dict[str, Any], role: str | None, server_name: str | None
) -> None:
    file_resolver = None if server_name else reader.resolver
    primary = reader.parse("ServerBindAddress", v.parse_ipv4_host, file_resolver)
    secondary = reader.parse("ServerBindAddress2", v.parse_ipv4_host, file_resolver)
    if role != SERVER:
        return
    if server_name:
        primary, secondary = _resolve_cli(reader, server_name), None
        fields["server_from_cli"] = True
        text = server_name
    else:
        entry = reader.found.get("ServerBindAddress")
        text = entry.value if entry is not None else None
        if entry is None:
            reader.problems.append(
                f"{reader.path}: ServerBindAddress is required in server mode "
                "(or give the server address on the command line)"
            )
    if primary is None or not reader.check_global(
        "ServerBindAddress", primary, text, bool(server_name)
    ):
        return
    if secondary is None and (server_name or "ServerBindAddress2" not in reader.found):
        secondary = secondary_server_address(primary)
        if secondary is None or not _is_global_unicast_ipv4(secondary):
            where = reader.found.get("ServerBindAddress")
            reader.error(
                where if not server_name else None,
                f"ServerBindAddress: the secondary address primary+1 ({secondary or 'none'}) "
                "is not a global unicast IPv4 address; set ServerBindAddress2",
            )
            return
    elif secondary is None or not reader.check_global("ServerBindAddress2", secondary, None):
        return
    if secondary == primary:
        reader.error(
            reader.found.get("ServerBindAddress2"),
            f"ServerBindAddress2: {secondary} is the primary address too; a Teredo server "
            "needs two different addresses",
        )
        return
    fields.update(server_bind_address=primary, server_bind_address2=secondary)


def _server_rate_values(reader: _Reader, fields: dict[str, Any]) -> None:
    """teredo-engine's server rate limits (examples/server.conf documents them)."""
    enabled = reader.parse("ServerRateLimit", v.parse_on_off)
    if enabled is not None:
        fields["server_rate_limit"] = enabled
    rates = []
    for name, limit in SERVER_RATE_DIRECTIVES.items():
        got = reader.parse(name, v.parse_rate)
        if got is None:
            continue
        if enabled is False:
            reader.warn(reader.found[name], f"{name}: ignored, ServerRateLimit is off")
            continue
        rates.append((limit, got[0], got[1]))
    if rates:
        fields["server_rates"] = tuple(rates)
    sources = reader.parse("ServerRateSources", v.parse_count, 1, MAX_RATE_SOURCES)
    if sources is not None:
        fields["server_rate_sources"] = sources


def _parse_watchdog(text: str) -> int:
    """`WorkerWatchdog`: whole seconds, 2-3600 (the heartbeat is once a second, so one late
    beat must not restart a healthy worker), or `off`/`0` to report a frozen worker only."""
    if text.lower() in ("off", "0"):
        return 0
    try:
        return v.parse_count(text, 2, 3600)
    except v.BadValue:
        raise v.BadValue(f"expected seconds from 2 to 3600, or off, got {text!r}") from None


def _by_line(problems: list[str], path: str) -> list[str]:
    """Problems in file order; file-wide ones (no line number) after the rest."""
    def line(problem: str) -> int:
        head = problem[len(path) + 1 :].split(":", 1)[0]
        return int(head) if head.isdigit() else 1 << 62

    return sorted(problems, key=line)


def load_config(
    path: str,
    *,
    server_name: str | None = None,
    resolver: v.Resolver | None = None,
) -> EngineConfig:
    """Read and parse `path` (docs/contracts.md §2).

    An unreadable file is an error, except when a server name is given: then, as with miredo,
    the engine runs as a client of that server with every other value at its default.
    """
    try:
        data = read_config_bytes(path)  # regular files only, at most 1 MiB (source.py)
    except OSError as e:
        if server_name and isinstance(e, FileNotFoundError):
            config = parse_config(b"", path, server_name=server_name, resolver=resolver)
            note = f"{path}: warning: no such file; using the defaults"
            return _with_warning(config, note)
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror or e}"]) from None
    return parse_config(data, path, server_name=server_name, resolver=resolver)


def _with_warning(config: EngineConfig, note: str) -> EngineConfig:
    from engine.proto.records import replace

    return replace(config, warnings=(note, *config.warnings))


def peek_role_and_status_socket(path: str) -> tuple[str, str | None]:
    """The role and `StatusSocket` of a file, without resolving names or judging values.

    `--status` needs only these two to find a running instance's socket; it must not fail
    (or wait on DNS) because of a problem elsewhere in the file. An unreadable file gives
    ("client", None), the role the engine would run as by default.
    """
    try:
        data = read_config_bytes(path)
    except OSError:
        return CLIENT, None
    reader = _Reader(path, None)
    reader.collect(split_lines(data, path).entries)
    role, _, _ = reader.role()
    socket_path = None
    got = reader.value_of("StatusSocket")
    if got is not None:
        socket_path = got[1]
    return role or CLIENT, socket_path
