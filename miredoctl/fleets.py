"""Fleets on this host: a fleet's name, its three folders, its record, `ls` and clash refusal.

Why names: the state of a fleet (histories, logs, rendered configs) must survive a reboot and
a fresh clone, so it is filed under the fleet's name, not under a hash of the folder it was
checked out to (docs/miredoctl.md, "Boot, service and layout"). The name comes from `name:` in
defaults.yaml, else `--project` / MIREDOCTL_PROJECT, else the fleet folder (see
`derived_name`). Two clones with one name are one fleet: they share the state, and a clone
may not start it while the other clone runs it (`before_up`).

Every fleet that `up` starts leaves a record (`fleet.json` in its lib folder): who it is, its
folders, and what each instance binds (interface name, UDP address:port, namespace). `ls` reads
the records; `up` reads the other fleets' records to refuse an instance whose interface or UDP
port another running fleet already holds in the same namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from miredoctl.errors import MiredoctlError, UsageError
from miredoctl.inventory import Fleet, Instance, _endpoints
from miredoctl.procs import read_pid
from miredoctl.state import (
    DEFAULT_LIB_BASE,
    DEFAULT_LOG_BASE,
    DEFAULT_STATE_BASE,
    StatePaths,
    fleet_hash,
    fleet_lock,
    fleet_processes,
)

NAME_KEY = "name"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
NAME_MAX = 64  # a unit name (miredoctl-NAME.service) and a folder name stay short
DEFAULTS_FILES = ("defaults.yaml", "defaults.yml")
RECORD_VERSION = 1
_LEGACY_RE = re.compile(r"[0-9a-f]{12}\Z")


def name_problem(value: Any) -> str | None:
    """Why `value` cannot name a fleet (None when it can): a folder and unit name on the host."""
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > NAME_MAX:
        return (f"the fleet name must be 1-{NAME_MAX} characters of a-z, 0-9, '_' and '-', "
                f"starting with a letter or digit; got {value!r}")
    return None


def run_base() -> Path:
    return Path(os.environ.get("MIREDOCTL_RUN_BASE") or DEFAULT_STATE_BASE)


def lib_base() -> Path:
    return Path(os.environ.get("MIREDOCTL_LIB_BASE") or DEFAULT_LIB_BASE)


def log_base() -> Path:
    return Path(os.environ.get("MIREDOCTL_LOG_BASE") or DEFAULT_LOG_BASE)


# -- the name ------------------------------------------------------------------------------
def declared_name(fleet_dir: Path) -> tuple[str, str] | None:
    """(`name:` of defaults.yaml, "file:line") or None; a bad name is an error naming the line.

    Read here, before the inventory, because the name decides where the state lives: even
    `down` with a broken inventory must find the running fleet. A file YAML cannot parse is
    scanned for a top-level `name:` line for the same reason (the inventory reports the
    syntax error itself).
    """
    for fname in DEFAULTS_FILES:
        path = fleet_dir / fname
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found: tuple[Any, int] | None = None
        try:
            node = yaml.compose(text)
            if isinstance(node, yaml.MappingNode):
                for knode, vnode in node.value:
                    if isinstance(knode, yaml.ScalarNode) and knode.value == NAME_KEY:
                        found = (yaml.safe_load(yaml.serialize(vnode)),
                                 knode.start_mark.line + 1)
        except (yaml.YAMLError, RecursionError):  # hostile nesting: the inventory says so
            found = None
            for lineno, line in enumerate(text.splitlines(), 1):
                m = re.match(r"name:\s*[\"']?([^\"'#\s]*)[\"']?\s*(#.*)?$", line)
                if m:
                    found = (m.group(1), lineno)
        if found is None:
            return None
        value, line = found
        problem = name_problem(value)
        if problem:
            raise UsageError(f"{path}:{line}: {problem}")
        return value, f"{path}:{line}"
    return None


def git_toplevel(folder: Path) -> Path | None:
    """The work tree holding `folder` (a `.git` folder or file), found without running git."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def derived_name(fleet_dir: Path) -> str:
    """A name from where the fleet folder is: `<repository>-<path in it>` inside a git work
    tree (/srv/edge/instances -> `edge-instances`; the repository itself -> `edge`), else
    the folder's own name; lowercased, other characters turned into '-'."""
    folder = Path(os.path.abspath(fleet_dir))
    top = git_toplevel(folder)
    parts = [folder.name] if top is None else \
        [top.name, *folder.relative_to(top).parts]
    text = re.sub(r"[^a-z0-9_-]+", "-", "-".join(parts).lower()).lstrip("-_")
    return text[:NAME_MAX].rstrip("-_") or "fleet"


def fleet_name(fleet_dir: Path, project: str | None) -> str:
    """`name:` of defaults.yaml, else `project` (--project / MIREDOCTL_PROJECT), else derived.

    A `--project` that disagrees with defaults.yaml is refused rather than ignored: the two
    would file the same fleet under two names.
    """
    declared = declared_name(fleet_dir)
    if project is not None:
        problem = name_problem(project)
        if problem:
            raise UsageError(f"--project: {problem}")
        if declared is not None and declared[0] != project:
            raise UsageError(f"--project {project} but {declared[1]} names this fleet "
                             f"{declared[0]!r}; drop one of them")
        return project
    if declared is not None:
        return declared[0]
    return derived_name(fleet_dir)


# -- the folders ---------------------------------------------------------------------------
def fleet_paths(fleet_dir: Path, *, project: str | None = None, state_dir: str | None = None,
                run_dir: str | None = None, lib_dir: str | None = None,
                log_dir: str | None = None, adopt: bool = True) -> StatePaths:
    """The folders of the fleet in `fleet_dir`: `state_dir` puts all in one (as before), each
    of the others overrides one folder; by default `<base>/<name>` for each of the three.

    A fleet still running from the hash-named folder of earlier releases keeps it until it is
    stopped (`adopt_legacy`): moving a running supervisord's socket would orphan it.
    """
    if state_dir:  # the folder is given: a bad name (the inventory reports it) stops nothing
        try:
            name = fleet_name(fleet_dir, project)
        except UsageError:
            name = ""
        return StatePaths(Path(state_dir), name=name)
    name = fleet_name(fleet_dir, project)
    paths = StatePaths(Path(run_dir) if run_dir else run_base() / name,
                       Path(lib_dir) if lib_dir else lib_base() / name,
                       Path(log_dir) if log_dir else log_base() / name, name=name)
    if adopt and not run_dir:
        return adopt_legacy(fleet_dir, paths)
    return paths


def legacy_paths(fleet_dir: Path, name: str = "") -> StatePaths:
    """The one state folder earlier releases used for this fleet folder."""
    return StatePaths(run_base() / fleet_hash(fleet_dir), name=name)


def supervisord_alive(paths: StatePaths) -> int | None:
    """The pid of this folder's supervisord if its pid file names a live one, else None."""
    pid = read_pid(paths.supervisord_pid)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
    except OSError:
        return None
    if any(b"supervisord" in a for a in argv) and str(paths.supervisord_conf).encode() in argv:
        return pid
    return None


def alive(paths: StatePaths) -> bool:
    """Anything of this fleet runs: its supervisord, or engines a dead one left."""
    return supervisord_alive(paths) is not None or bool(fleet_processes(paths))


def adopt_legacy(fleet_dir: Path, paths: StatePaths) -> StatePaths:
    """The old single folder while anything still runs from it, else `paths` after moving
    the old histories and logs there (so restart counts and logs carry over)."""
    old = legacy_paths(fleet_dir, paths.name)
    if not old.root.is_dir():
        return paths
    if alive(old):
        return old
    try:
        with fleet_lock(old, "move to the named layout", notify=lambda _m: None):
            paths.ensure()
            _move_tree(old.histories, paths.histories)
            _move_tree(old.logs, paths.logs)
    except (OSError, MiredoctlError):
        return old  # not ours to move (a reader without write access): the next root command
    shutil.rmtree(old.root, ignore_errors=True)
    print(f"miredoctl: moved this fleet's histories and logs from {old.root} to "
          f"{paths.histories.parent} and {paths.logs} (the layout by fleet name)",
          file=sys.stderr)
    return paths


def _move_tree(src: Path, dest: Path) -> None:
    """Move files of `src` into `dest`; a file both have is appended (older lines first)."""
    if not src.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        target = dest / item.name
        if item.is_dir():
            _move_tree(item, target)
        elif target.exists():
            newer = target.read_bytes()
            target.write_bytes(item.read_bytes() + newer)
            item.unlink()
        else:
            shutil.move(str(item), str(target))


# -- the record ----------------------------------------------------------------------------
def claims(inst: Instance) -> dict[str, Any]:
    """What an instance holds on the host: its namespace, interface name and UDP endpoints."""
    return {"netns": inst.netns,
            "interface": inst.values.get("interface") if inst.role != "server" else None,
            "endpoints": [[ip, port] for ip, port, _key in _endpoints(inst)]}


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_text(fleet_dir: Path, paths: StatePaths, fleet: Fleet, names: list[str]) -> str:
    """Who this fleet is and what its instances hold, for `ls` and other fleets' `up`
    (`up` writes it with the files it can roll back)."""
    data = {"version": RECORD_VERSION, "name": paths.name,
            "folder": str(Path(fleet_dir).resolve()), "run_dir": str(paths.root),
            "lib_dir": str(paths.lib_root), "log_dir": str(paths.logs),
            "instances": {n: claims(fleet.instances[n]) for n in sorted(names)}}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def record_paths(rec: dict[str, Any]) -> StatePaths:
    return StatePaths(Path(rec["run_dir"]), Path(rec["lib_dir"]), Path(rec["log_dir"]),
                      name=str(rec.get("name", "")))


def host_records() -> list[dict[str, Any]]:
    """Every fleet record on this host: named fleets and adopted hash-named folders."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    places = [p / "fleet.json" for p in _subdirs(lib_base())]
    places += [p / "fleet.json" for p in _subdirs(run_base()) if _LEGACY_RE.match(p.name)]
    for place in places:
        rec = read_record(place)
        if rec is None or not {"run_dir", "lib_dir", "log_dir"} <= set(rec):
            continue
        if rec["lib_dir"] in seen:
            continue
        seen.add(rec["lib_dir"])
        found.append(rec)
    return found


def _subdirs(base: Path) -> list[Path]:
    try:
        return sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return []


# -- before `up` ---------------------------------------------------------------------------
def _clash(mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """What `mine` and `theirs` (two instances' claims) both hold in one namespace, or None."""
    if mine.get("netns") != theirs.get("netns"):
        return None
    where = f"netns {mine['netns']}" if mine.get("netns") else "the host namespace"
    if mine.get("interface") and mine.get("interface") == theirs.get("interface"):
        return f"interface '{mine['interface']}' in {where}"
    for ip, port in mine.get("endpoints", []):
        for oip, oport in theirs.get("endpoints", []):
            if port == oport and (ip == oip or "0.0.0.0" in (ip, oip)):
                return f"UDP {ip}:{port} in {where} (theirs {oip}:{oport})"
    return None


def clashes(mine: dict[str, dict[str, Any]], others: list[tuple[dict[str, Any], set[str]]]
            ) -> list[str]:
    """One line per instance of `mine` that clashes with a running instance of another fleet
    (`others`: each fleet's record and the names of its instances running now)."""
    lines = []
    for name in sorted(mine):
        for rec, running in others:
            for oname in sorted(running):
                held = rec.get("instances", {}).get(oname)
                what = _clash(mine[name], held) if isinstance(held, dict) else None
                if what:
                    lines.append(f"instance {name}: {what} is held by instance {oname} of "
                                 f"fleet '{rec.get('name')}' ({rec.get('folder')}), which is "
                                 "running")
    return lines


def before_up(fleet_dir: Path, paths: StatePaths, fleet: Fleet, starting: list[str],
              enabled: list[str]) -> str:
    """Refuse what would collide with another fleet or clone; the record `up` then writes.

    `starting`: the instances this `up` starts or restarts; `enabled`: every enabled one.
    """
    folder = str(Path(fleet_dir).resolve())
    if not paths.single:
        rec = read_record(paths.record)
        if rec is not None and rec.get("folder") not in (None, folder) and alive(paths):
            raise MiredoctlError(
                f"fleet '{paths.name}' is running from {rec['folder']} (this is {folder}): "
                "run `miredoctl down --all` there first, or give this folder another fleet "
                "name (`name:` in defaults.yaml, or --project)")
    own = str(paths.lib_root.absolute())
    others = []
    for rec in host_records():
        if os.path.abspath(rec["lib_dir"]) == own:
            continue
        with contextlib.suppress(KeyError, TypeError, OSError):
            running = {n for n in fleet_processes(record_paths(rec)) if not n.startswith("_")}
            if running:
                others.append((rec, running))
    problems = clashes({n: claims(fleet.instances[n]) for n in starting}, others)
    if problems:
        raise MiredoctlError("; ".join(problems) + "; nothing was started (stop the other "
                                                   "instance, or move this one)")
    return record_text(fleet_dir, paths, fleet, enabled)


# -- `miredoctl ls` ------------------------------------------------------------------------
@dataclass
class FleetRow:
    name: str
    folder: str
    state: str  # running, stopped
    running: int
    total: int
    run_dir: str
    lib_dir: str
    log_dir: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def list_fleets() -> list[FleetRow]:
    """Every fleet this host has a record of, with what runs of it now (like `docker compose
    ls`); a hash-named folder of an earlier release without a record is listed by its hash."""
    rows = []
    recorded = set()
    for rec in host_records():
        paths = record_paths(rec)
        recorded.add(os.path.abspath(rec["run_dir"]))
        rows.append(_row(str(rec.get("name") or "?"), str(rec.get("folder") or "?"), paths,
                         len(rec.get("instances") or {})))
    for sub in _subdirs(run_base()):
        if _LEGACY_RE.match(sub.name) and os.path.abspath(sub) not in recorded:
            paths = StatePaths(sub)
            rows.append(_row(sub.name, "?", paths,
                             sum(1 for _ in paths.programs.glob("*.conf"))))
    return sorted(rows, key=lambda r: (r.name, r.folder))


def _row(name: str, folder: str, paths: StatePaths, total: int) -> FleetRow:
    engines = [n for n in fleet_processes(paths) if not n.startswith("_")]
    up = supervisord_alive(paths) is not None or bool(engines)
    return FleetRow(name, folder, "running" if up else "stopped", len(engines),
                    max(total, len(engines)), str(paths.root), str(paths.lib_root),
                    str(paths.logs))


def ls_table(rows: list[FleetRow]) -> str:
    head = ("NAME", "STATE", "INSTANCES", "FOLDER")
    cells = [head] + [(r.name, r.state, f"{r.running}/{r.total}", r.folder) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3]
                     for c in cells)


# -- the command line ----------------------------------------------------------------------
def add_layout_options(p: argparse.ArgumentParser, default: Any) -> None:
    """--project and the three folders (each also an environment variable)."""
    p.add_argument("--project", metavar="NAME", default=default,
                   help="the fleet's name when defaults.yaml has no `name:` (env "
                        "MIREDOCTL_PROJECT; default: from the fleet folder)")
    p.add_argument("--run-dir", metavar="DIR", default=default,
                   help="sockets and pid files (env MIREDOCTL_RUN_DIR; default "
                        "/run/miredoctl/<fleet>)")
    p.add_argument("--lib-dir", metavar="DIR", default=default,
                   help="rendered configs, histories, the fleet record (env MIREDOCTL_LIB_DIR; "
                        "default /var/lib/miredoctl/<fleet>)")
    p.add_argument("--log-dir", metavar="DIR", default=default,
                   help="logs (env MIREDOCTL_LOG_DIR; default /var/log/miredoctl/<fleet>)")


def paths_from_args(fleet_dir: Path, args: argparse.Namespace) -> StatePaths:
    """The folders the command line and environment name for the fleet in `fleet_dir`."""
    def pick(attr: str, env: str) -> str | None:
        return getattr(args, attr, None) or os.environ.get(env) or None

    return fleet_paths(fleet_dir, project=pick("project", "MIREDOCTL_PROJECT"),
                       state_dir=pick("state_dir", "MIREDOCTL_STATE"),
                       run_dir=pick("run_dir", "MIREDOCTL_RUN_DIR"),
                       lib_dir=pick("lib_dir", "MIREDOCTL_LIB_DIR"),
                       log_dir=pick("log_dir", "MIREDOCTL_LOG_DIR"))


def add_parsers(cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """`ls` and `service` (miredoctl.service), registered by cli.build_parser."""
    cmd("ls", "the fleets on this host: name, state, instances running/total, folder",
        selection=False)
    p = cmd("service", "install, remove or inspect the systemd unit that starts this fleet "
            "at boot", selection=False)
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument("--unit-dir", metavar="DIR", default=None,
                   help="where unit files go (env MIREDOCTL_UNIT_DIR; default "
                        "/etc/systemd/system)")


def cmd_ls(args: argparse.Namespace) -> int:
    rows = list_fleets()
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2, sort_keys=True))
    else:
        print(ls_table(rows))
    return 0
