"""Which git commit a fleet is applied from, and whether its tree had uncommitted edits.

`up` records, per instance it (re)starts, the revision it applied in one file of the state
folder (`applied.json`, next to `configs/`; docs/miredoctl.md, "Git hygiene"), so `status` and
`show` say per instance which commit it runs by reading that one file: no git call at all in
`status`. An instance `up` leaves unchanged keeps the revision it was started with (its config
is byte for byte the same, and rewriting every config at each commit would touch files that
did not change). Two trees count: the fleet folder and the
template, which may live elsewhere (the project checkout's `templates/`, or a wheel, outside
git). One `git status --porcelain=v2 --branch` per tree gives both the commit and the edits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miredoctl.errors import MiredoctlError
from miredoctl.render import TEMPLATE_NAME, default_template
from miredoctl.state import StatePaths, write_atomic

APPLIED_FILE = "applied.json"
GIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class TreeState:
    """A path's place in git: HEAD's commit (None outside git or before the first commit)
    and whether anything under the path differs from it (None when unknown)."""

    commit: str | None
    dirty: bool | None
    in_git: bool = True
    refused: str | None = None  # git would not read it (a repository of another user)

    def text(self) -> str:
        """`1a2b3c4d5e6f`, `1a2b3c4d5e6f (uncommitted edits)`, `not in git`, ..."""
        if not self.in_git:
            return "not in git"
        if self.commit is None:
            return "no commit yet" + (" (uncommitted edits)" if self.dirty else "")
        return self.commit + (" (uncommitted edits)" if self.dirty else "")


def tree_state(path: Path, shipped: str | None = None) -> TreeState:
    """HEAD and the uncommitted edits (untracked files included) under `path`, a folder or a
    file, from one git call. A fleet unpacked on a host of a fleet across hosts has no git:
    there `shipped`, the commit the controller shipped (MIREDOCTL_FLEET_COMMIT), answers."""
    folder, spec = (path, ".") if path.is_dir() else (path.parent, path.name)
    try:
        proc = subprocess.run(["git", "-C", str(folder), "status", "--porcelain=v2",
                               "--branch", "--no-renames", "--", spec],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return TreeState(shipped.split()[0] if shipped else None, None, in_git=bool(shipped))
    if proc.returncode != 0 and "dubious ownership" in proc.stderr:
        # root running `up` in an operator's checkout: git (2.35.2+) will not read a repository
        # owned by someone else unless told to trust it, and that is the operator's decision
        top = proc.stderr.split("repository at '", 1)[-1].split("'", 1)[0] or str(folder)
        return TreeState(None, None, refused=f"git refuses to read {top}, owned by another "
                                             "user (trust it with: git config --global --add "
                                             f"safe.directory {top})")
    if proc.returncode != 0:
        if shipped:
            return TreeState(shipped.split()[0], "uncommitted" in shipped)
        return TreeState(None, None, in_git=False)
    commit = None
    dirty = False
    for line in proc.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            commit = None if oid == "(initial)" else oid[:12]
        elif line and not line.startswith("#"):
            dirty = True
    return TreeState(commit, dirty)


@dataclass(frozen=True)
class Revision:
    """What one `up` applies: the fleet folder's tree and the template's."""

    fleet: TreeState
    template: TreeState
    template_path: str

    @property
    def edits(self) -> list[str]:
        """The trees with uncommitted edits: `up` warns about each."""
        out = []
        for state, what in ((self.fleet, "the fleet folder"),
                            (self.template, f"the template {self.template_path}")):
            if state.refused:
                out.append(f"cannot tell whether {what} has uncommitted edits: {state.refused}")
            elif state.in_git and (state.dirty or state.commit is None):
                out.append(f"{what} has uncommitted edits")
        return out

    @property
    def unclean(self) -> list[str]:
        """What `up --require-clean` refuses: edits, and a fleet outside git (no commit to
        name, so nothing proves what runs)."""
        return (["the fleet folder is not in git"] if not self.fleet.in_git else []) + self.edits

    def record(self) -> dict[str, Any]:
        """One instance's entry in applied.json (and its `revision` in `status --json`)."""
        out: dict[str, Any] = {
            "fleet": self.fleet.commit, "fleet_dirty": self.fleet.dirty,
            "template": self.template.commit, "template_dirty": self.template.dirty,
            "template_path": self.template_path}
        for key, state in (("fleet", self.fleet), ("template", self.template)):
            if state.refused:
                out[f"{key}_refused"] = True  # not "outside git": git would not say
        return out


def revision(fleet_root: Path, template: Path) -> Revision:
    return Revision(tree_state(fleet_root, os.environ.get("MIREDOCTL_FLEET_COMMIT")),
                    tree_state(template), str(template))


def applied_path(paths: StatePaths) -> Path:
    return paths.configs.parent / APPLIED_FILE


def load_applied(paths: StatePaths) -> dict[str, dict[str, Any]]:
    """Every instance's recorded revision; {} when none was recorded or the file is unreadable
    (status still answers: the revision is a detail, not the state)."""
    try:
        data = json.loads(applied_path(paths).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) \
        else {}


def record_applied(paths: StatePaths, names: list[str], rev: Revision) -> None:
    """After `up` or `reload` applied `names`' configs: they run `rev` now. Best effort: a
    state folder that became read-only must not turn a good `up` into a failure."""
    if not names:
        return
    data = load_applied(paths)
    for name in names:
        data[name] = rev.record()
    with contextlib.suppress(OSError):
        write_atomic(applied_path(paths), json.dumps(data, indent=1, sort_keys=True) + "\n")


def short(rev: dict[str, Any] | None) -> str:
    """`1a2b3c4d5e6f`, with `+` for a dirty tree (as `git describe --dirty` marks it)."""
    if not rev:
        return "-"
    commit = rev.get("fleet") or "-"
    return commit + ("+" if rev.get("fleet_dirty") or rev.get("template_dirty") else "")


def describe(rev: dict[str, Any] | None) -> str | None:
    """`fleet 1a2b3c4d5e6f (uncommitted edits), template 0f9e8d7c6b5a` for `show`."""
    if not rev:
        return None

    def one(key: str) -> str:
        if rev.get(f"{key}_refused"):
            return "unknown (git refused to read the repository)"
        if rev.get(key) is None:
            return "not in git"
        return str(rev[key]) + (" (uncommitted edits)" if rev.get(f"{key}_dirty") else "")
    return f"fleet {one('fleet')}, template {one('template')}"


def fleet_template(fleet_root: Path) -> Path:
    """The template `up` renders with (render.template_path), found without loading the
    inventory: `up --require-clean` refuses before anything else is read."""
    own = fleet_root / "templates" / TEMPLATE_NAME
    return own if own.is_file() else default_template()


def check_clean(fleet_root: Path, require_clean: bool, warn: bool = True) -> None:
    """Before `up` touches anything: refuse an unclean tree with `--require-clean`, else warn
    about uncommitted edits in one line (what runs would match no commit)."""
    rev = revision(fleet_root, fleet_template(fleet_root))
    if require_clean and rev.unclean:
        raise MiredoctlError(f"--require-clean: {'; '.join(rev.unclean)} ({fleet_root}); "
                             "commit first; nothing was changed")
    if rev.edits and warn:
        print(f"miredoctl: warning: {'; '.join(rev.edits)} ({fleet_root}): what runs will "
              f"match no commit (fleet at {rev.fleet.text()})", file=sys.stderr)
