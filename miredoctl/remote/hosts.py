"""`hosts.yaml`: the fleet's hosts, in Ansible's own YAML inventory format.

The same file an operator can hand to plain `ansible -i hosts.yaml`: `all:` with `hosts:`,
`vars:` and `children:` (groups, nested), host variables such as `ansible_host`,
`ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, `ansible_ssh_common_args`, and
miredoctl's own `miredoctl_*` variables (where the agent lives on the host). miredoctl reads it
itself, with line numbers, so that `validate` can say `hosts.yaml:7: ...` like for every other
inventory problem; Ansible reads it again when the controller runs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from miredoctl.errors import InventoryError, Problem, UnknownInstanceError
from miredoctl.inventory import BAD_VALUE, NETNS_RE, Instance, _Reader, display_path

HOSTS_FILES = ("hosts.yaml", "hosts.yml")
KNOWN_HOSTS = "known_hosts"
GROUP_KEYS = ("hosts", "vars", "children")


@dataclass
class HostEntry:
    """One host: its variables after group inheritance (all < group < host), its groups."""

    name: str
    line: int
    vars: dict[str, Any] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)

    @property
    def address(self) -> str | None:
        if self.vars.get("ansible_connection") == "local":
            return "local"
        value = self.vars.get("ansible_host")
        return str(value) if value not in (None, "") else None


@dataclass
class HostsFile:
    path: Path | None
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)

    def expand(self, patterns: list[str]) -> list[str]:
        """`--host` values: host names, globs or group names, as `ansible --limit` knows them."""
        chosen: set[str] = set()
        for pattern in patterns:
            found = set(fnmatch.filter(self.hosts, pattern))
            for group in fnmatch.filter(self.groups, pattern):
                found |= self.groups[group]
            if not found:
                raise UnknownInstanceError(
                    f"unknown host or group '{pattern}'; hosts: {', '.join(sorted(self.hosts))}"
                    + (f"; groups: {', '.join(sorted(self.groups))}" if self.groups else ""))
            chosen |= found
        return sorted(chosen)


def hosts_path(root: Path) -> Path | None:
    for name in HOSTS_FILES:
        if (root / name).is_file():
            return root / name
    return None


def load(root: Path, problems: list[Problem]) -> HostsFile:
    """Read hosts.yaml; every problem lands in `problems` with its line."""
    path = hosts_path(root)
    out = HostsFile(path)
    if path is None:
        return out
    reader = _Reader(path, problems)
    node = reader.compose()
    if node is None:
        return out
    top = reader.mapping(node, "hosts.yaml")
    for key, line, vnode in top:
        if key != "all":
            reader.problem(line, f"unknown top-level key '{key}': put hosts and groups under "
                                 "`all:` (`hosts:`, `children:`)")
            continue
        _group(reader, out, "all", vnode, {}, 0)
    return out


def _group(reader: _Reader, out: HostsFile, name: str, node: yaml.Node | None,
           inherited: dict[str, Any], depth: int) -> set[str]:
    if depth > 16:
        reader.problem(node.start_mark.line + 1 if node else 0, "groups nested too deeply")
        return set()
    members: set[str] = set()
    parts = {k: (line, v) for k, line, v in reader.mapping(node, f"group '{name}'")
             if k in GROUP_KEYS or reader.problem(line, f"unknown key '{k}' in group '{name}' "
                                                        "(hosts, vars, children)")}
    gvars = dict(inherited)
    if "vars" in parts:
        gvars.update(_vars(reader, parts["vars"][1], f"vars of group '{name}'"))
    if "hosts" in parts:
        for hname, line, hnode in reader.mapping(parts["hosts"][1], f"hosts of '{name}'"):
            if not NETNS_RE.fullmatch(hname):
                reader.problem(line, f"host name '{hname}': use 1-64 of [A-Za-z0-9_.-]")
                continue
            entry = out.hosts.setdefault(hname, HostEntry(hname, line))
            entry.vars = {**gvars, **entry.vars, **_vars(reader, hnode, f"host '{hname}'")}
            members.add(hname)
    if "children" in parts:
        for cname, _line, cnode in reader.mapping(parts["children"][1], f"children of '{name}'"):
            members |= _group(reader, out, cname, cnode, gvars, depth + 1)
    for h in members:
        out.hosts[h].groups.add(name)
    out.groups.setdefault(name, set()).update(members)
    return members


def _vars(reader: _Reader, node: yaml.Node | None, what: str) -> dict[str, Any]:
    out = {}
    for key, _line, vnode in reader.mapping(node, what):
        value = reader.value(vnode)
        if value is not BAD_VALUE:
            out[key] = value
    return out


def check_fleet(root: Path, instances: dict[str, Instance], problems: list[Problem]) -> None:
    """validate: every `host:` names a host of hosts.yaml, and that host has an address."""
    hosts = load(root, problems)
    shown = display_path(hosts.path) if hosts.path else None
    for name in sorted(instances):
        inst = instances[name]
        if not inst.host:
            continue
        where = inst.where("host")
        file, _, line = where.rpartition(":")
        entry = hosts.hosts.get(inst.host)
        if entry is None:
            known = ", ".join(sorted(hosts.hosts)) or "(none)"
            problems.append(Problem(file, int(line), f"unknown host '{inst.host}' "
                                    + (f"(not in {shown}; hosts: {known})" if shown
                                       else "(the fleet has no hosts.yaml)")))
        elif entry.address is None and shown:
            problems.append(Problem(shown, entry.line, f"host '{inst.host}' (used by {name}) "
                                    "has no address: set ansible_host"))


def load_checked(root: Path) -> HostsFile:
    problems: list[Problem] = []
    hosts = load(root, problems)
    if problems:
        raise InventoryError(problems)
    return hosts
