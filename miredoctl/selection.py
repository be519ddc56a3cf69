"""Which instances a command acts on: names or globs, `--role`, `--tag`, `--all`.

An unknown name is an error naming the known ones (exit 4), never a silent no-op: a typo in
`miredoctl reload relay-ue` must not look like success.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from miredoctl.errors import UnknownInstanceError, UsageError
from miredoctl.inventory import Fleet


@dataclass
class Selection:
    names: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    all: bool = False
    hosts: list[str] = field(default_factory=list)  # --host patterns (a fleet across hosts)
    host_names: set[str] | None = None  # what they expand to (miredoctl.remote.hosts)

    @property
    def empty(self) -> bool:
        return not (self.names or self.roles or self.tags or self.all or self.hosts)

    @property
    def whole_fleet(self) -> bool:
        """`--all`, or nothing at all: the command covers every instance (e.g. removes orphans)."""
        return self.all or self.empty


def resolve(fleet: Fleet, sel: Selection, *, default_all: bool, extra_known: tuple[str, ...] = ()
            ) -> list[str]:
    """Selected instance names in fleet order; `extra_known` adds names only supervisord knows."""
    known = sorted(set(fleet.names) | set(extra_known))
    if sel.empty:
        if not default_all:
            raise UsageError("say which instances: NAME..., --role R, --tag T or --all")
        return known
    if sel.hosts:  # --host narrows whatever else was chosen (alone: everything on those hosts)
        if sel.host_names is None:
            raise UsageError("--host needs a fleet across hosts (hosts.yaml in the fleet folder)")
        wide = Selection(sel.names, sel.roles, sel.tags, sel.all or not (
            sel.names or sel.roles or sel.tags))
        return [n for n in resolve(fleet, wide, default_all=default_all, extra_known=extra_known)
                if n in fleet.instances and fleet.instances[n].host in sel.host_names]
    if sel.all:
        return known
    chosen: set[str] = set()
    for pattern in sel.names:
        matches = fnmatch.filter(known, pattern)
        if not matches:
            raise UnknownInstanceError(f"unknown instance '{pattern}'; known: "
                                       f"{', '.join(known) or '(none)'}")
        chosen.update(matches)
    for role in sel.roles:
        found = [n for n in fleet.names if fleet.instances[n].role == role]
        if not found:
            raise UnknownInstanceError(f"no instance has role '{role}'")
        chosen.update(found)
    for tag in sel.tags:
        found = [n for n in fleet.names if tag in fleet.instances[n].tags]
        if not found:
            all_tags = sorted({t for i in fleet.instances.values() for t in i.tags})
            raise UnknownInstanceError(f"no instance has tag '{tag}'; tags in use: "
                                       f"{', '.join(all_tags) or '(none)'}")
        chosen.update(found)
    return [n for n in known if n in chosen]
