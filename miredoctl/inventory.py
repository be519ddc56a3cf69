"""Load and validate a fleet folder: one YAML file per instance plus optional shared defaults.

Why the node tree: PyYAML's plain `safe_load` forgets where values came from. We compose the
node tree instead and keep each node's start mark, so every problem can be reported as
`file:line: message` and every final value can say which file and line set it (`config --origin`).

Layering (last wins): built-in defaults -> `defaults.yaml` `all:` -> `defaults.yaml`
`roles: {ROLE: ...}` -> the instance file. An explicit `null` in a later layer removes the value.
Fields from `all:` that do not apply to a role are skipped for that role; the same field in a role
section or an instance file is an error (miredo would call it "superfluous").

Fleet-level settings sit at the top of `defaults.yaml`, beside `all:` and `roles:`.
`allow_documentation_addresses` (default false) lets a server bind a documentation address
(RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) as if it were public. A test or demo
network uses those ranges precisely because they never route on the internet; a production fleet
that names one has a typo, so it is refused unless the fleet says it is a lab.
`exporter: {listen: "ADDR:PORT"}` (default: none) makes the fleet's supervisord run the metrics
exporter (`miredoctl exporter`, docs/metrics.md) as one of its programs.
`notify: {command: ..., webhook: ..., timeout: ...}` (default: none) names who hears about state
changes an operator cares about (miredoctl/notify_settings.py; docs/miredoctl.md, "Health checks").
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from miredoctl.errors import InventoryError, Problem, bad_character

ROLES = ("client", "relay", "server")
ENGINES = ("teredo-engine", "miredo")
ALL = frozenset(ROLES)
CLIENT_RELAY = frozenset({"client", "relay"})
DEFAULTS_STEMS = ("defaults",)
# hosts.yaml is the Ansible inventory of a fleet across hosts (miredoctl/remote/hosts.py)
HOSTS_STEMS = ("hosts",)
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog",
    "user", "uucp", *(f"local{i}" for i in range(8)),
)
# Every pattern is used with fullmatch (and ends in \Z where it looks ahead): `$` also matches
# before a trailing newline, which let a file named "c3\n.yaml" become the instance "c3\n".
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_NAMES = ("exporter", "logstamp", "reaper", "supervisord")
"""Names the manager's own programs and log files take in a fleet's supervisord config and log
folder (`[program:exporter]`, `supervisord.log`, `reaper.log`...): an instance by one of these
names would share them."""
NETNS_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?")
IFNAME_RE = re.compile(r"[^\s/:#][^\s/:]{0,14}")
# miredo.conf has no quoting: a value is one whitespace-free token on its line
TOKEN_RE = re.compile(r"[^\s#][^\s]*")
MAX_TOKEN = 1023  # miredo reads a value with sscanf("%1023s")
STOP_FLAPPING_DEFAULT = {"restarts": 5, "within": 3600}


class FieldError(ValueError):
    """A value of the right key but the wrong type or range; the message names what is expected."""


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if not isinstance(value, dict | list) else kind


def _str(value: Any) -> str:
    """Every string of the inventory passes here: a control character (newline, NUL, ESC, DEL,
    a Unicode line separator) could end a line of a rendered file and start a new directive,
    section or option there, so none is accepted anywhere."""
    if not isinstance(value, str) or not value:
        raise FieldError(f"must be a non-empty string, got {_describe(value)}")
    bad = bad_character(value)
    if bad:
        raise FieldError(f"must not contain control characters, got {bad} in {_describe(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, got {_describe(value)}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"must be an integer {lo}-{hi}, got {_describe(value)}")
        if not lo <= value <= hi:
            raise FieldError(f"must be an integer {lo}-{hi}, got {value}")
        return value
    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise FieldError(f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return value.lower()
    return check


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(_str(value)))
    except ipaddress.AddressValueError:
        raise FieldError(f"must be an IPv4 address, got {_describe(value)}")


def _host(value: Any) -> str:
    text = _str(value)
    try:
        return str(ipaddress.IPv4Address(text))
    except ipaddress.AddressValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text) or not HOST_RE.fullmatch(text):
        raise FieldError(f"must be an IPv4 address or a host name, got {_describe(value)}")
    return text


def _prefix(value: Any) -> str:
    text = _str(value)
    if "%" in text:  # ipaddress accepts a scope id (any text after '%'); a prefix has none
        raise FieldError(f"must be an IPv6 prefix such as 2001:0::, got {_describe(value)}")
    try:
        addr = ipaddress.IPv6Address(text.split("/")[0])
    except ipaddress.AddressValueError:
        raise FieldError(f"must be an IPv6 prefix such as 2001:0::, got {_describe(value)}")
    if addr.is_multicast:
        raise FieldError(f"must not be a multicast prefix, got {text}")
    if "/" in text and text.split("/", 1)[1] != "32":
        raise FieldError(f"Teredo prefixes are /32, got {text}")
    return text.split("/")[0]


def _ifname(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[^\s/:]{1,15}", text) or len(text.encode()) > 15:
        raise FieldError(f"must be an interface name of 1-15 characters without spaces, '/' "
                         f"or ':', got {_describe(value)}")
    if not IFNAME_RE.fullmatch(text) or text in (".", ".."):
        # miredo.conf reads a value starting with '#' as a missing value; the kernel refuses
        # '.' and '..'
        raise FieldError(f"must not start with '#' or be '.' or '..', got {_describe(value)}")
    return text


def _netns(value: Any) -> str:
    """A name `ip netns` accepts (no '/', not '.' or '..', which would name /run/netns itself
    or its parent) and that cannot pass for an option of `ip netns exec` (no leading '-')."""
    text = _str(value)
    if not NETNS_RE.fullmatch(text) or text in (".", ".."):
        raise FieldError(f"must be a network namespace name of 1-64 characters [A-Za-z0-9_.-], "
                         f"not starting with '-' and not '.' or '..', got {_describe(value)}")
    return text


def _inventory_host(value: Any) -> str:
    """An Ansible inventory host name: it reaches `--limit` and file names on the controller,
    so one word of [A-Za-z0-9_.-] (hosts.yaml must define it: miredoctl/remote/hosts.py)."""
    text = _str(value)
    if not NETNS_RE.fullmatch(text) or text in (".", ".."):
        raise FieldError(f"must be a host name of hosts.yaml, 1-64 characters [A-Za-z0-9_.-], "
                         f"not starting with '-', got {_describe(value)}")
    return text


def _token(value: Any) -> str:
    """A free-form value that goes into miredo.conf (DiscoveryInterfaces): one token, because
    the format has no quoting and cuts a value at its first whitespace."""
    text = _str(value)
    if not TOKEN_RE.fullmatch(text):
        raise FieldError(f"must be one word without spaces, not starting with '#' (miredo.conf "
                         f"cannot quote), got {_describe(value)}")
    if len(text.encode()) > MAX_TOKEN:
        raise FieldError(f"must be at most {MAX_TOKEN} bytes (what miredo reads of a value), "
                         f"got {len(text.encode())}")
    return text


AUTO_USER = "auto"
"""`user: auto`: a system user per instance, created by `up` (miredoctl/users.py)."""


def _user(value: Any) -> str:
    """The account the engine drops to: it must exist here (the engine would fail at start
    otherwise) and must not be root, which would silently keep every privilege; `auto` is
    the per-instance account `up` creates."""
    text = _str(value)
    if text == AUTO_USER:
        return text
    if text.startswith("-"):
        raise FieldError(f"must be a user name, got {_describe(value)}")
    try:
        entry = pwd.getpwnam(text)
    except (KeyError, ValueError):
        raise FieldError(f"names no user on this machine, got {_describe(value)}")
    if entry.pw_uid == 0:
        raise FieldError(f"must not be root (uid 0): the engine drops privileges to this user, "
                         f"got {_describe(value)}")
    return text


def _abspath(value: Any) -> str:
    text = _str(value)
    if not text.startswith("/"):
        raise FieldError(f"must be an absolute path, got {_describe(value)}")
    return text


def _chroot(value: Any) -> str:
    """A chroot of '/' confines nothing, and a missing directory fails only at start."""
    text = _abspath(value)
    if os.path.realpath(text) == "/":
        raise FieldError(f"must not be the root directory, got {_describe(value)}")
    if not os.path.isdir(text):
        raise FieldError(f"must be an existing directory, got {_describe(value)}")
    return text


def _stop_flapping(value: Any) -> dict[str, int]:
    """`{restarts: M, within: S}`: the health check stops an instance once supervisord
    restarted it M times within S seconds (listeners/healthrules.py); null switches it off."""
    if not isinstance(value, dict):
        raise FieldError(f"must be a mapping like {{restarts: 5, within: 3600}} or null, got "
                         f"{_describe(value)}")
    unknown = sorted(set(value) - {"restarts", "within"}, key=str)
    if unknown:
        raise FieldError(f"has unknown key {unknown[0]!r}; it has 'restarts:' and 'within:'")
    out = {**STOP_FLAPPING_DEFAULT}
    for key, lo, hi in (("restarts", 1, 1000), ("within", 10, 7 * 86400)):
        if key in value:
            try:
                out[key] = _int_range(lo, hi)(value[key])
            except FieldError as exc:
                raise FieldError(f"{key} {exc}") from None
    return out


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise FieldError(f"must be a list of strings, got {_describe(value)}")
    for tag in value:
        _str(tag)
    return list(value)


@dataclass(frozen=True)
class Field:
    """One inventory key: its checker, the roles it means something for, and its directive."""

    name: str
    check: Callable[[Any], Any]
    roles: frozenset[str]
    doc: str
    directive: str | None = None


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("role", _choice(*ROLES), ALL, "client, relay or server (required)", "RelayType"),
    Field("engine", _choice(*ENGINES), ALL,
          "teredo-engine (ours, default) or miredo (Debian's miredo / miredo-server)"),
    Field("enabled", _bool, ALL, "false keeps the instance out of supervisord (default true)"),
    Field("tags", _tags, ALL, "free labels for --tag selection"),
    Field("netns", _netns, ALL, "run inside this named network namespace (ip netns exec)"),
    Field("host", _inventory_host, ALL, "the hosts.yaml host this instance runs on"),
    Field("server", _host, frozenset({"client"}), "Teredo server (required for clients)",
          "ServerAddress"),
    Field("server2", _host, frozenset({"client"}), "secondary server address", "ServerAddress2"),
    Field("relay_type", _choice("cone", "relay", "restricted"), frozenset({"relay"}),
          "relay flavour (default cone)", "RelayType"),
    Field("interface", _ifname, CLIENT_RELAY, "tunnel interface name (default teredo)",
          "InterfaceName"),
    Field("bind_address", _ipv4, CLIENT_RELAY, "local IPv4 address of the UDP socket",
          "BindAddress"),
    Field("bind_port", _int_range(0, 65535), CLIENT_RELAY,
          "UDP port (0 = ephemeral; must be >= 1024 since it is bound after dropping root)",
          "BindPort"),
    Field("prefix", _prefix, frozenset({"relay", "server"}), "Teredo /32 prefix (default 2001:0::)",
          "Prefix"),
    Field("mtu", _int_range(1280, 65535), frozenset({"relay", "server"}), "tunnel / RA MTU",
          "InterfaceMTU"),
    Field("local_discovery", _choice("enabled", "forced", "disabled"), frozenset({"client"}),
          "local client discovery (not in Debian's miredo 1.2.6)", "LocalDiscovery"),
    Field("discovery_interfaces", _token, frozenset({"client"}), "regex of interface names",
          "DiscoveryInterfaces"),
    Field("discovery_netmask", _ipv4, frozenset({"client"}), "discovery netmask",
          "DiscoveryNetmask"),
    Field("syslog_facility", _choice(*SYSLOG_FACILITIES), ALL, "syslog facility",
          "SyslogFacility"),
    Field("user", _user, ALL, "unprivileged user the engine drops to (-u); auto: teredo-NAME"),
    Field("chroot", _chroot, ALL, "chroot directory (-t)"),
    Field("server_bind_address", _ipv4, frozenset({"server"}),
          "primary public IPv4 of a server (required for servers)", "ServerBindAddress"),
    Field("server_bind_address2", _ipv4, frozenset({"server"}),
          "secondary IPv4 (default primary + 1)", "ServerBindAddress2"),
    Field("restart_unqualified_after", _int_range(5, 7 * 86400), frozenset({"client"}),
          "health check: restart a client not qualified for this many seconds (null: never)"),
    Field("stop_flapping", _stop_flapping, ALL,
          "health check: {restarts: M, within: S} stops an instance restarted M times in S s"),
)}

BUILTIN_DEFAULTS: dict[str, Any] = {"engine": "teredo-engine", "enabled": True, "tags": []}
# the health checks are on unless the inventory says null (docs/miredoctl.md, "Health checks")
RESTART_UNQUALIFIED_DEFAULT = 300
ROLE_BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "client": {"interface": "teredo", "restart_unqualified_after": RESTART_UNQUALIFIED_DEFAULT,
               "stop_flapping": STOP_FLAPPING_DEFAULT},
    "relay": {"interface": "teredo", "relay_type": "cone", "stop_flapping": STOP_FLAPPING_DEFAULT},
    "server": {"stop_flapping": STOP_FLAPPING_DEFAULT},
}
DISCOVERY_FIELDS = ("local_discovery", "discovery_interfaces", "discovery_netmask")
# The UDP port every Teredo server listens on (IANA-assigned to Teredo, RFC 4380). The manager's
# one definition: it must not import the engine's internals, which have their own.
TEREDO_SERVER_PORT = 3544
ALLOW_DOCUMENTATION = "allow_documentation_addresses"
EXPORTER = "exporter"
EXPORTER_KEYS = ("listen",)
DEFAULT_EXPORTER_LISTEN = "127.0.0.1:9531"
NOTIFY = "notify"
DEFAULTS_KEYS = ("all", "roles", ALLOW_DOCUMENTATION, EXPORTER, NOTIFY)
DOCUMENTATION_NETWORKS = tuple(ipaddress.IPv4Network(n) for n in
                               ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))


def secondary_server_address(primary: str) -> str | None:
    """A Teredo server's second address when none is given: the next one up, as miredo-server
    defaults `ServerBindAddress2` (teredo-engine follows it); None after 255.255.255.255."""
    try:
        return str(ipaddress.IPv4Address(primary) + 1)
    except ipaddress.AddressValueError:
        return None


@dataclass(frozen=True)
class SourceLocation:
    """Where a final value came from: a file and line, or a built-in default."""

    file: str | None
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.file else "built-in default"


BUILTIN = SourceLocation(None)


@dataclass
class Instance:
    """One merged, validated instance: `values` holds set fields, `origins` who set them."""

    name: str
    file: Path
    values: dict[str, Any]
    origins: dict[str, SourceLocation]
    sources: list[Path] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def role(self) -> str:
        return self.values["role"]

    @property
    def engine(self) -> str:
        return self.values["engine"]

    @property
    def netns(self) -> str | None:
        return self.values.get("netns")

    @property
    def host(self) -> str | None:
        return self.values.get("host")

    @property
    def enabled(self) -> bool:
        return bool(self.values["enabled"])

    @property
    def tags(self) -> list[str]:
        return list(self.values.get("tags") or [])

    def where(self, key: str) -> str:
        """The file:line to blame for a key (the instance file when the key was never set)."""
        origin = self.origins.get(key)
        if origin is None or origin.file is None:
            return f"{display_path(self.file)}:1"
        return str(origin)


@dataclass
class Fleet:
    """The whole validated inventory of one fleet folder."""

    root: Path
    instances: dict[str, Instance]
    defaults_file: Path | None
    allow_documentation_addresses: bool = False
    exporter_listen: str | None = None  # `exporter: {listen: ...}`: supervisord runs it
    notify: dict[str, Any] | None = None  # `notify:` of defaults.yaml (notify_settings.py)

    @property
    def names(self) -> list[str]:
        return sorted(self.instances)


def display_path(path: Path) -> str:
    """Paths in messages relative to the current directory when below it (short, clickable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


MAX_DEPTH = 64  # YAML nesting; an instance file needs 3
_OPENING = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
            yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSING = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
BAD_VALUE = object()  # a value PyYAML could not build; the problem is already reported


class _Reader:
    """Composes one YAML file into nodes and collects problems with their line numbers."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.shown = display_path(path)
        self.problems = problems

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.shown, line, message))

    def compose(self) -> yaml.Node | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(0, f"cannot read: {exc}")
            return None
        try:
            if not self._shallow_enough(text):
                return None
            loader = yaml.SafeLoader(text)
            node = loader.get_single_node()
            self._loader = loader
            return node
        except yaml.reader.ReaderError as exc:
            # not a MarkedYAMLError: it knows the offset, not the line
            line = text.count("\n", 0, max(exc.position, 0)) + 1
            char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
            self.problem(line, f"YAML syntax error: character {bad_character(char) or repr(char)} "
                               "is not allowed in a YAML file")
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            self.problem(line, f"YAML syntax error: {exc.problem or exc.context}")
            return None
        except yaml.YAMLError as exc:
            self.problem(0, f"YAML syntax error: {str(exc).splitlines()[0] if str(exc) else exc}")
            return None
        except RecursionError:
            self.problem(0, f"YAML nesting deeper than {MAX_DEPTH} levels")
            return None

    def _shallow_enough(self, text: str) -> bool:
        """PyYAML composes nodes recursively: a few thousand nested lists exhaust Python's
        stack. The scanner is iterative, so nesting is measured on its tokens first."""
        depth = 0
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, _OPENING):
                depth += 1
                if depth > MAX_DEPTH:
                    self.problem(token.start_mark.line + 1,
                                 f"YAML nesting deeper than {MAX_DEPTH} levels")
                    return False
            elif isinstance(token, _CLOSING):
                depth -= 1
        return True

    def value(self, node: yaml.Node) -> Any:
        """The Python value of a node, or BAD_VALUE (already reported) when PyYAML cannot build
        one: a `!!python/...` tag, an impossible date, an integer too long to convert."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.problem(mark.line + 1, f"bad YAML value: {exc.problem or exc.context}")
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.problem(node.start_mark.line + 1, f"bad YAML value: {text}")
        return BAD_VALUE

    def mapping(self, node: yaml.Node | None, what: str) -> list[tuple[str, int, yaml.Node]]:
        """(key, line, value node) for a mapping node; problems for non-mappings and duplicates."""
        if node is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.problem(node.start_mark.line + 1, f"{what} must be a mapping of key: value")
            return []
        seen: dict[str, int] = {}
        out = []
        for knode, vnode in node.value:
            line = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                self.problem(line, f"{what}: keys must be plain words")
                continue
            key = knode.value
            if key in seen:
                self.problem(line, f"duplicate key '{key}' (first at line {seen[key]})")
                continue
            seen[key] = line
            out.append((key, line, vnode))
        return out


def did_you_mean(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class _Layer:
    """Field values of one layer with their lines, already type-checked."""

    reader: _Reader
    values: dict[str, tuple[Any, int]]
    seen: set[str] = field(default_factory=set)


def _read_fields(reader: _Reader, node: yaml.Node | None, what: str,
                 allowed_roles: frozenset[str] | None) -> _Layer:
    """Type-check every key of one layer; unknown keys get a did-you-mean."""
    layer = _Layer(reader, {})
    for key, line, vnode in reader.mapping(node, what):
        spec = FIELDS.get(key)
        layer.seen.add(key)
        if spec is None:
            reader.problem(line, f"unknown key '{key}'{did_you_mean(key, list(FIELDS))}")
            continue
        value = reader.value(vnode)
        vline = vnode.start_mark.line + 1
        if value is BAD_VALUE:
            continue
        if value is None:
            layer.values[key] = (None, vline)  # explicit null: remove an inherited value
            continue
        try:
            value = spec.check(value)
        except FieldError as exc:
            reader.problem(vline, f"{key} {exc}")
            continue
        if allowed_roles is not None and not (spec.roles & allowed_roles):
            reader.problem(line, f"{key} does not apply to a {'/'.join(sorted(allowed_roles))} "
                                 f"(only to {', '.join(sorted(spec.roles))})")
            continue
        layer.values[key] = (value, vline)
    return layer


@dataclass
class _Defaults:
    all: _Layer | None
    roles: dict[str, _Layer]
    path: Path | None
    allow_documentation_addresses: bool = False
    exporter_listen: str | None = None
    notify: dict[str, Any] | None = None


def parse_listen(text: Any) -> tuple[str, int]:
    """`ADDR:PORT` or `[IPv6]:PORT` with an IP literal (no name: validation must not need DNS,
    and the exporter must bind what the operator read)."""
    if not isinstance(text, str) or ":" not in text:
        raise FieldError(f"must be \"ADDR:PORT\" (e.g. {DEFAULT_EXPORTER_LISTEN!r} or "
                         f"\"[::1]:9531\"), got {_describe(text)}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = ":" in host
    else:
        ok = ":" not in host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        ok = False
    if not ok:
        raise FieldError(f"must name an IP address (IPv6 in brackets), got {_describe(text)}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise FieldError(f"must end in a port 1-65535, got {_describe(text)}")
    return host, int(port_text)


def _exporter_setting(reader: _Reader, vnode: yaml.Node) -> str | None:
    """`exporter: {listen: "ADDR:PORT"}`; `exporter: null` (or no key) runs none."""
    value = reader.value(vnode)
    if value is None or value is BAD_VALUE:
        return None
    line = vnode.start_mark.line + 1
    if not isinstance(value, dict):
        reader.problem(line, f"{EXPORTER} must be a mapping like {{listen: "
                             f"\"{DEFAULT_EXPORTER_LISTEN}\"}} or null, got {_describe(value)}")
        return None
    listen: Any = DEFAULT_EXPORTER_LISTEN
    for key, kline, knode in reader.mapping(vnode, EXPORTER):
        if key not in EXPORTER_KEYS:
            reader.problem(kline, f"unknown key '{key}' in {EXPORTER}"
                                  f"{did_you_mean(key, EXPORTER_KEYS)}; it has 'listen:'")
            continue
        listen = reader.value(knode)
        if listen is BAD_VALUE:
            return None
        try:
            parse_listen(_str(listen))
        except FieldError as exc:
            reader.problem(knode.start_mark.line + 1, f"{EXPORTER}.listen {exc}")
            return None
    return listen


def _load_defaults(path: Path | None, problems: list[Problem]) -> _Defaults:
    if path is None:
        return _Defaults(None, {}, None)
    reader = _Reader(path, problems)
    node = reader.compose()
    all_layer: _Layer | None = None
    roles: dict[str, _Layer] = {}
    allow_doc = False
    exporter: str | None = None
    notify: dict[str, Any] | None = None
    for key, line, vnode in reader.mapping(node, "defaults file"):
        if key == EXPORTER:
            exporter = _exporter_setting(reader, vnode)
            continue
        if key == NOTIFY:
            from miredoctl.notify_settings import notify_setting  # uses this module
            notify = notify_setting(reader, vnode)
            continue
        if key == "name":  # the fleet's name: decides its folders (miredoctl/fleets.py)
            from miredoctl.fleets import name_problem
            value = reader.value(vnode)
            problem = name_problem(value) if value is not BAD_VALUE else None
            if problem:
                reader.problem(vnode.start_mark.line + 1, problem)
            continue
        if key == ALLOW_DOCUMENTATION:
            value = reader.value(vnode)
            if value is BAD_VALUE:
                continue
            try:
                allow_doc = _bool(value)
            except FieldError as exc:
                reader.problem(vnode.start_mark.line + 1, f"{key} {exc}")
            continue
        if key == "all":
            all_layer = _read_fields(reader, vnode, "all", None)
            if "role" in all_layer.values:
                reader.problem(all_layer.values.pop("role")[1],
                               "role cannot be a default; set it in each instance file")
        elif key == "roles":
            for role, rline, rnode in reader.mapping(vnode, "roles"):
                if role not in ROLES:
                    reader.problem(rline, f"unknown role '{role}'{did_you_mean(role, ROLES)}; "
                                          f"roles are {', '.join(ROLES)}")
                    continue
                layer = _read_fields(reader, rnode, f"roles.{role}", frozenset({role}))
                if "role" in layer.values:
                    reader.problem(layer.values.pop("role")[1], "role cannot be a default")
                roles[role] = layer
        else:
            reader.problem(line, f"unknown key '{key}'{did_you_mean(key, DEFAULTS_KEYS)}; "
                                 "a defaults file has 'all:', 'roles:', "
                                 f"'{ALLOW_DOCUMENTATION}:', '{EXPORTER}:' and '{NOTIFY}:'")
    return _Defaults(all_layer, roles, path, allow_doc, exporter, notify)


def _merge(name: str, path: Path, own: _Layer, defaults: _Defaults,
           problems: list[Problem]) -> Instance | None:
    reader = own.reader
    role_entry = own.values.get("role")
    if role_entry is None and "role" in own.seen:
        return None  # present but invalid: already reported
    if role_entry is None or role_entry[0] is None:
        reader.problem(role_entry[1] if role_entry else 1,
                       f"role is required: one of {', '.join(ROLES)}")
        return None
    role = role_entry[0]
    values: dict[str, Any] = {}
    origins: dict[str, SourceLocation] = {}
    sources = [path]

    def apply(layer_values: dict[str, tuple[Any, int]], origin_file: str | None,
              skip_foreign: bool) -> None:
        for key, (value, line) in layer_values.items():
            if skip_foreign and role not in FIELDS[key].roles:
                continue
            if value is None and key in BUILTIN_DEFAULTS:
                # `engine`, `enabled`, `tags` have no "unset": null means the built-in default
                values[key] = BUILTIN_DEFAULTS[key]
                origins[key] = BUILTIN
            elif value is None:
                values.pop(key, None)
                origins.pop(key, None)
            else:
                values[key] = value
                origins[key] = SourceLocation(origin_file, line) if origin_file else BUILTIN

    apply({k: (v, 0) for k, v in BUILTIN_DEFAULTS.items()}, None, False)
    apply({k: (v, 0) for k, v in ROLE_BUILTIN_DEFAULTS[role].items()}, None, False)
    if defaults.path is not None:
        shown = display_path(defaults.path)
        if defaults.all is not None:
            apply(defaults.all.values, shown, True)
        if role in defaults.roles:
            apply(defaults.roles[role].values, shown, False)
        sources.append(defaults.path)
    for key, (_value, line) in own.values.items():
        if role not in FIELDS[key].roles:
            reader.problem(line, f"{key} does not apply to a {role} "
                                 f"(only to {', '.join(sorted(FIELDS[key].roles))})")
    apply({k: v for k, v in own.values.items() if role in FIELDS[k].roles},
          reader.shown, False)
    inst = Instance(name, path, values, origins, sources)
    _check_role(inst, reader, problems, defaults.allow_documentation_addresses)
    return inst


def _check_role(inst: Instance, reader: _Reader, problems: list[Problem],
                allow_documentation: bool) -> None:
    """Role requirements and engine limits that need the merged values."""
    def at(key: str) -> tuple[str, int]:
        origin = inst.origins.get(key)
        if origin is None or origin.file is None:
            return reader.shown, 1
        return origin.file, origin.line

    if inst.role == "client" and "server" not in inst.values:
        problems.append(Problem(reader.shown, 1, "a client needs 'server' (its Teredo server)"))
    if inst.role == "server" and "server_bind_address" not in inst.values:
        problems.append(Problem(reader.shown, 1,
                                "a server needs 'server_bind_address' (its primary public IPv4)"))
    if inst.role == "server" and "server_bind_address" in inst.values:
        primary = ipaddress.IPv4Address(inst.values["server_bind_address"])
        if _is_documentation(primary):
            if not allow_documentation:
                problems.append(Problem(
                    *at("server_bind_address"),
                    f"server_bind_address {primary} is a documentation address (RFC 5737); a "
                    f"lab fleet allows those with '{ALLOW_DOCUMENTATION}: true' in defaults.yaml"))
        elif not primary.is_global:
            problems.append(Problem(*at("server_bind_address"),
                                    "server_bind_address must be a global IPv4 address"))
        if "server_bind_address2" not in inst.values and \
                secondary_server_address(str(primary)) is None:
            problems.append(Problem(*at("server_bind_address"),
                                    f"server_bind_address {primary} has no next address for "
                                    "the secondary; set server_bind_address2"))
    port = inst.values.get("bind_port")
    if port is not None and 0 < port < 1024:
        problems.append(Problem(*at("bind_port"),
                                f"bind_port {port} is privileged: engines bind after dropping "
                                "root, use 0 or >= 1024"))
    if inst.engine == "miredo":
        for key in DISCOVERY_FIELDS:
            if key in inst.values:
                problems.append(Problem(*at(key), f"{key} is not supported by Debian's miredo "
                                                  "1.2.6 (engine: miredo)"))


def _is_documentation(addr: ipaddress.IPv4Address) -> bool:
    """In a documentation range: never public, but a lab's stand-in for a public address (the
    engines accept them, so only the fleet setting decides)."""
    return any(addr in net for net in DOCUMENTATION_NETWORKS)


def _endpoints(inst: Instance) -> list[tuple[str, int, str]]:
    """(IPv4, UDP port, key to blame) the instance binds, for the clash check."""
    if inst.role == "server":
        primary = inst.values.get("server_bind_address")
        if primary is None:
            return []
        secondary = (inst.values.get("server_bind_address2")
                     or secondary_server_address(primary))
        if secondary is None:  # reported by _check_role
            return [(primary, TEREDO_SERVER_PORT, "server_bind_address")]
        key2 = "server_bind_address2" if "server_bind_address2" in inst.values \
            else "server_bind_address"
        return [(primary, TEREDO_SERVER_PORT, "server_bind_address"),
                (secondary, TEREDO_SERVER_PORT, key2)]
    port = inst.values.get("bind_port", 0)
    if not port:
        return []
    return [(inst.values.get("bind_address", "0.0.0.0"), port, "bind_port")]


def _blame(inst: Instance, key: str, message: str) -> Problem:
    """A fleet clash is reported in the instance's own file: at the key if the file sets it,
    else at its `netns` line (what put it next to the other one), else at line 1."""
    own = display_path(inst.file)
    for candidate in (key, "netns"):
        origin = inst.origins.get(candidate)
        if origin is not None and origin.file == own:
            if candidate != key and key in inst.origins:
                message += f"; {key} from {inst.origins[key]}"
            return Problem(own, origin.line, message)
    if key in inst.origins:
        message += f"; {key} from {inst.origins[key]}"
    return Problem(own, 1, message)


def _check_fleet(instances: dict[str, Instance], problems: list[Problem]) -> None:
    """Clashes across the fleet: interface names and UDP endpoints within one namespace."""
    ifnames: dict[tuple[str | None, str | None, str], Instance] = {}
    endpoints: list[tuple[tuple[str | None, str | None], str, int, Instance]] = []
    for name in sorted(instances):
        inst = instances[name]
        if not inst.enabled:
            continue
        ns_text = f"netns {inst.netns}" if inst.netns else "the host namespace"
        if inst.host:  # instances on different hosts cannot clash
            ns_text += f" of host {inst.host}"
        where = (inst.host, inst.netns)
        ifname = inst.values.get("interface") if inst.role != "server" else None
        if ifname:
            other = ifnames.get((*where, ifname))
            if other is not None:
                problems.append(_blame(inst, "interface",
                                       f"interface '{ifname}' in {ns_text} is also used by "
                                       f"{other.name} ({display_path(other.file)})"))
            else:
                ifnames[(*where, ifname)] = inst
        for ip, port, key in _endpoints(inst):
            for ons, oip, oport, other in endpoints:
                if ons == where and oport == port and (
                        oip == ip or "0.0.0.0" in (oip, ip)):
                    problems.append(_blame(inst, key, f"UDP {ip}:{port} in {ns_text} clashes "
                                                      f"with {other.name} ({oip}:{oport})"))
                    break
            endpoints.append((where, ip, port, inst))


def instance_files(root: Path) -> tuple[list[Path], Path | None]:
    """Instance files and the defaults file of a fleet folder."""
    files = sorted(p for p in root.iterdir()
                   if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith("."))
    defaults = [p for p in files if p.stem in DEFAULTS_STEMS]
    return ([p for p in files if p.stem not in DEFAULTS_STEMS + HOSTS_STEMS],
            (defaults[0] if defaults else None))


def load_fleet(root: Path) -> Fleet:
    """Load and validate a whole fleet folder; raises InventoryError with every problem found."""
    root = Path(root)
    if not root.is_dir():
        raise InventoryError([Problem(display_path(root), 0, "fleet folder not found "
                                      "(use --fleet DIR or MIREDOCTL_FLEET)")])
    problems: list[Problem] = []
    files, defaults_path = instance_files(root)
    defaults = _load_defaults(defaults_path, problems)
    instances: dict[str, Instance] = {}
    for path in files:
        name = path.stem
        reader = _Reader(path, problems)
        if not NAME_RE.fullmatch(name):
            reader.problem(0, "instance file names must be lower-case letters, digits, '-' or "
                              "'_' (at most 32, starting with a letter or digit)")
            continue
        if name in RESERVED_NAMES:
            reader.problem(0, f"instance name '{name}' is reserved for the manager's own "
                              f"programs and logs ({', '.join(RESERVED_NAMES)}); rename the file")
            continue
        if name in instances:
            reader.problem(0, f"instance '{name}' is defined twice ({instances[name].file.name})")
            continue
        before = len(problems)
        node = reader.compose()
        if node is None:
            if len(problems) == before:
                reader.problem(1, f"empty instance file: role is required: one of "
                                  f"{', '.join(ROLES)}")
            continue
        own = _read_fields(reader, node, "instance", None)
        inst = _merge(name, path, own, defaults, problems)
        if inst is not None:
            instances[name] = inst
    _check_fleet(instances, problems)
    if any(i.host for i in instances.values()) or any(
            (root / f"{stem}{ext}").exists() for stem in HOSTS_STEMS for ext in (".yaml", ".yml")):
        from miredoctl.remote import hosts  # only a fleet across hosts reads hosts.yaml
        hosts.check_fleet(root, instances, problems)
    if not files and not problems:
        problems.append(Problem(display_path(root), 0, "no instance files (*.yaml) in the fleet"))
    if problems:
        raise InventoryError(problems)
    this_host = os.environ.get("MIREDOCTL_THIS_HOST")
    if this_host is not None:  # the per-host agent (miredoctl/remote/agent.py): its share only
        instances = {n: i for n, i in instances.items() if (i.host or "") == this_host}
    return Fleet(root, instances, defaults_path, defaults.allow_documentation_addresses,
                 defaults.exporter_listen, defaults.notify)
