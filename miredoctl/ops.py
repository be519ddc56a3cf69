"""The fleet-changing operations: up, down, restart, reload, and the diff they are based on.

Invariant that makes "restart only what changed" work without extra bookkeeping: the rendered
config on disk is what the engine runs. miredoctl only writes an instance's config right before
it (re)starts or HUPs that instance, and a failed `up` puts the previous files back and restarts
the previous configuration.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import subprocess
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.states import ProcessStates

from miredoctl import fleets, gitinfo
from miredoctl import orphans as orphans_mod
from miredoctl.errors import InventoryError, MiredoctlError, Problem, UsageError
from miredoctl.inventory import Fleet, display_path, load_fleet
from miredoctl.listeners import history
from miredoctl.listeners.healthrules import settings_path, settings_text
from miredoctl.procs import alive
from miredoctl.render import (
    EXPORTER,
    HEALER,
    LOGSTAMP,
    MIREDO,
    MIREDO_SERVER,
    REAPER,
    Rendered,
    body_of,
    checkconf_problems,
    engine_argv0,
    render_fleet,
    supervisord_conf,
    template_path,
)
from miredoctl.state import (
    FleetProcess,
    StatePaths,
    fleet_lock,
    fleet_processes,
    state_error,
    write_atomic,
)
from miredoctl.supervisord import (
    ACTIVE_STATES,
    STOPPED_FOR_GOOD,
    STOPPED_NAME,
    ApplyResult,
    SupervisordClient,
    identifier_for,
    last_lines,
    parsed_groups,
    read_file,
    state_of,
)
from miredoctl.users import ensure_users


@dataclass
class Context:
    fleet_dir: Path
    paths: StatePaths
    _loaded: tuple[tuple, Fleet] | None = field(default=None, repr=False, compare=False)

    def load(self) -> Fleet:
        """The inventory, parsed again only if a file of the fleet folder changed since the last
        load: `up` reads it once to select and once under the lock, which at 100 instances
        cost 0.7 s twice. The folder is re-listed and every file's stat compared, so an edit
        made while `up` waited for the lock is still seen."""
        key = _fleet_fingerprint(self.fleet_dir)
        if key is not None and self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        fleet = load_fleet(self.fleet_dir)
        self._loaded = (key, fleet) if key is not None else None
        return fleet


def _fleet_fingerprint(root: Path) -> tuple | None:
    """What a load of `root` depends on: each entry's name, inode, size and change time (ctime
    too: an editor that keeps the size and resets the mtime still changes it), and the host
    the agent serves. None when the folder cannot be listed (then nothing is reused)."""
    try:
        with os.scandir(root) as it:
            entries = sorted((e.name, *_stat_key(e.stat())) for e in it)
    except OSError:
        return None
    return (os.environ.get("MIREDOCTL_THIS_HOST"), tuple(entries))


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Plan:
    """What `up` will do to one instance and why."""

    name: str
    action: str  # add, recreate, restart, start, unchanged
    reason: str


def validate(ctx: Context, *, checkconf: bool = True) -> tuple[Fleet, dict[str, Rendered]]:
    """Inventory + template + external config checkers; raises InventoryError with all problems."""
    fleet = ctx.load()
    enabled = [n for n in fleet.names if fleet.instances[n].enabled]
    rendered = render_fleet(fleet, ctx.paths, enabled)
    if checkconf:
        with tempfile.TemporaryDirectory(prefix="miredoctl-check-") as scratch:
            problems = checkconf_problems(rendered, Path(scratch))
            problems += engine_check_problems(rendered, Path(scratch))
        if problems:
            raise InventoryError(problems)
    return fleet, rendered


def engine_check_problems(rendered: dict[str, Rendered], scratch: Path) -> list[Problem]:
    """`teredo-engine --check FILE...` on every config our engine will run (contract §3).

    One process for all of them: an interpreter start per file cost about 0.1 s per instance
    (10 s of a 12 s `validate` at 100 instances). The engine prints each file's lines prefixed
    by that file and an `OK` line for each file that passes, which is how the answer is split
    back per instance. An engine build whose `--check` crashes (a Python traceback, e.g. not
    installed yet) cannot judge the file; that is reported by `up` when the engine fails to
    start, not here.
    """
    paths: dict[str, Path] = {}
    for name, r in sorted(rendered.items()):
        if r.inst.engine == "teredo-engine":
            paths[name] = scratch / f"{name}.engine.conf"
            paths[name].write_text(r.text)
    problems: list[Problem] = []
    names = list(paths)
    for i in range(0, len(names), _CHECK_BATCH):
        problems += _engine_check_batch(rendered, {n: paths[n] for n in names[i:i + _CHECK_BATCH]})
    return problems


_CHECK_BATCH = 512  # files per `--check` process: far below the kernel's argument size limit


def _engine_check_batch(rendered: dict[str, Rendered], paths: dict[str, Path]) -> list[Problem]:
    try:
        proc = subprocess.run([*engine_argv0(), "--check", *map(str, paths.values())],
                              capture_output=True, text=True, timeout=30 + 0.2 * len(paths))
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 1 or "Traceback" in proc.stderr:  # 0: all good; 2: cannot judge
        return []
    problems = []
    for name, path in paths.items():
        prefix = f"{path}:"
        if any(line.startswith(f"{prefix} OK") for line in proc.stdout.splitlines()):
            continue
        own = "\n".join(line for line in proc.stderr.splitlines() if line.startswith(prefix))
        detail = last_lines((own or proc.stderr or proc.stdout).replace(str(path),
                                                                         f"{name}.conf"), 2)
        problems.append(Problem(display_path(rendered[name].inst.file), 0,
                                f"teredo-engine --check rejects the rendered config: {detail}"))
    return problems


def check_start_prerequisites(fleet: Fleet, names: list[str]) -> None:
    """Root, the instances' namespaces and their engine binaries: what would make a start fail,
    checked before anything is touched."""
    problems: list[Problem] = []
    if os.geteuid() != 0:
        raise MiredoctlError("needs root: engines create TUN interfaces (CAP_NET_ADMIN) and "
                             "`ip netns exec` needs CAP_SYS_ADMIN; run miredoctl as root")
    for name in names:
        inst = fleet.instances[name]
        shown = display_path(inst.file)
        if inst.netns and not Path("/run/netns", inst.netns).exists():
            problems.append(Problem(shown, 0, f"network namespace '{inst.netns}' does not "
                                              "exist (for the demo: `miredoctl lab up`)"))
        if inst.engine == "miredo":
            binary = MIREDO_SERVER if inst.role == "server" else MIREDO
            if not os.access(binary, os.X_OK):
                problems.append(Problem(shown, 0, f"engine miredo needs {binary} "
                                                  "(apt-get install miredo miredo-server)"))
        elif not Path(engine_argv0()[0]).exists():
            problems.append(Problem(shown, 0, "teredo-engine is not installed next to "
                                              "miredoctl (pip install -e .)"))
    if problems:
        raise InventoryError(problems)


def _selected_enabled(fleet: Fleet, names: list[str], explicit: bool) -> list[str]:
    out = []
    for name in names:
        inst = fleet.instances.get(name)
        if inst is None:
            continue
        if not inst.enabled:
            if explicit:
                raise UsageError(f"{name} is disabled ({inst.where('enabled')}: enabled: false)")
            continue
        out.append(name)
    return out


def plan_up(ctx: Context, rendered: dict[str, Rendered], names: list[str],
            procs: dict[str, dict]) -> list[Plan]:
    plans = []
    for name in names:
        r = rendered[name]
        old_conf = read_file(ctx.paths.config(name))
        old_prog = read_file(ctx.paths.program(name))
        info = procs.get(name)
        if info is None:
            plans.append(Plan(name, "add", "new in supervisord"))
        elif old_prog != r.program:
            plans.append(Plan(name, "recreate", "command or process settings changed"))
        elif old_conf is None or body_of(old_conf) != r.body:
            if state_of(info) in STOPPED_FOR_GOOD:
                plans.append(Plan(name, "start", "config changed, was " + info["statename"]))
            else:
                plans.append(Plan(name, "restart", "config changed"))
        elif state_of(info) in (*STOPPED_FOR_GOOD, ProcessStates.BACKOFF):
            plans.append(Plan(name, "start", "was " + info["statename"]))
        else:
            plans.append(Plan(name, "unchanged", info["statename"].lower()))
    return plans


class _Journal:
    """Every file one `up` writes or removes, with what was there before.

    Until supervisord has taken the new configuration, a failure (supervisord's parser refuses
    it, the re-read fails, the daemon does not start, Ctrl-C) must leave the state folder as it
    was: a config left behind would make the next good `up` restart that instance for nothing,
    and a broken program section would make every later `up` fail the same way.
    """

    def __init__(self) -> None:
        self.saved: dict[Path, tuple[bytes, int] | None] = {}

    def _remember(self, path: Path) -> None:
        if path in self.saved:
            return
        try:
            self.saved[path] = (path.read_bytes(), path.stat().st_mode & 0o7777)
        except FileNotFoundError:
            self.saved[path] = None

    def write(self, path: Path, text: str) -> None:
        self._remember(path)
        write_atomic(path, text)

    def unlink(self, path: Path) -> None:
        self._remember(path)
        path.unlink(missing_ok=True)

    def restore(self) -> list[str]:
        """Put every file back, newest change first; the paths that could not be restored."""
        failed = []
        for path, before in reversed(list(self.saved.items())):
            try:
                if before is None:
                    path.unlink(missing_ok=True)
                else:
                    write_atomic(path, before[0].decode(), mode=before[1])
            except OSError as exc:
                failed.append(f"{path} ({exc.strerror or exc})")
        return failed


def _check_supervisord_config(paths: StatePaths) -> None:
    """supervisord's own parser must accept the new files and find exactly our programs: one
    per program file plus miredoctl's listeners, nothing a value could have smuggled in."""
    groups = parsed_groups(paths.supervisord_conf)
    expected = {REAPER, LOGSTAMP, HEALER, EXPORTER,
                *(p.stem for p in paths.programs.glob("*.conf"))}
    unexpected = sorted(set(groups) - expected)
    if unexpected:
        raise MiredoctlError(f"supervisord's parser finds programs miredoctl did not write: "
                             f"{', '.join(unexpected)}")


def _restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, text)


def up(ctx: Context, names: list[str], *, whole_fleet: bool, explicit: bool,
       dry_run: bool = False, remove_orphans: bool = False
       ) -> tuple[list[Plan], list[ApplyResult]]:
    """Validate, render, start supervisord if needed, then add/restart/start what needs it.

    Under the fleet lock from the start (not for --dry-run, which changes nothing): a
    concurrent `down` or `up` must see either the fleet before this `up` or after it.
    """
    with contextlib.nullcontext() if dry_run else fleet_lock(ctx.paths, "up"):
        return _up(ctx, names, whole_fleet=whole_fleet, explicit=explicit, dry_run=dry_run,
                   remove_orphans=remove_orphans)


def _up(ctx: Context, names: list[str], *, whole_fleet: bool, explicit: bool,
        dry_run: bool, remove_orphans: bool = False) -> tuple[list[Plan], list[ApplyResult]]:
    fleet, rendered = validate(ctx)
    names = _selected_enabled(fleet, names, explicit)
    sup = SupervisordClient(ctx.paths)
    running = sup.running()
    procs = sup.processes() if running else {}
    plans = plan_up(ctx, rendered, names, procs)
    # disabled instances go; orphans (not in the inventory) only with --remove-orphans
    orphans, kept = orphans_mod.split_gone(
        fleet, sorted(set(procs) - set(rendered)) if whole_fleet else [], remove_orphans)
    if dry_run:
        plans += [Plan(o, "remove", "no longer an enabled instance") for o in orphans]
        plans += [Plan(o, "keep", "orphan: not in the inventory, left running") for o in kept]
        return plans, []
    # another fleet (or clone) holding what these engines bind: refused before anything runs
    record = fleets.before_up(ctx.fleet_dir, ctx.paths, fleet,
                              [p.name for p in plans if p.action != "unchanged"],
                              sorted(rendered))
    check_start_prerequisites(fleet, [p.name for p in plans if p.action != "unchanged"])
    too_long = ctx.paths.sockets_too_long(sorted(rendered))
    if too_long:
        raise UsageError(too_long)
    # `user: auto` accounts before anything is written: an engine must find its user
    users_created = ensure_users(fleet, [p.name for p in plans if p.action != "unchanged"])
    if not running or any(p.action != "unchanged" for p in plans):
        check_writable(ctx.paths)
    with fleet_lock(ctx.paths, "up"):
        # engines whose supervisord died: by name, not supervised by the one running now
        strays = unsupervised(ctx.paths, procs if running else None)
        journal = _Journal()
        stale_results: list[ApplyResult] = []
        try:
            journal.write(ctx.paths.supervisord_conf,
                          supervisord_conf(ctx.paths, identifier_for(ctx.paths),
                                           fleet.exporter_listen, fleet.root, len(rendered)))
            journal.write(ctx.paths.record, record)
            # what the health listener acts on: the settings this `up` applies
            journal.write(settings_path(ctx.paths.histories), settings_text(fleet))
            if not running:
                # Nothing runs: program files left from an earlier run describe nothing, and
                # supervisord would autostart them all. Only the selected instances get a program.
                for stale in ctx.paths.programs.glob("*.conf"):
                    journal.unlink(stale)
            saved = {p.name: (read_file(ctx.paths.config(p.name)),
                              read_file(ctx.paths.program(p.name))) for p in plans}
            for plan in plans:
                r = rendered[plan.name]
                if plan.action == "unchanged":
                    journal.write(ctx.paths.config(plan.name), r.text)  # header-only changes
                else:
                    # config first, program section last: supervisord never sees a program
                    # without its config
                    journal.write(ctx.paths.config(plan.name), r.text)
                    journal.write(ctx.paths.program(plan.name), r.program)
            for orphan in orphans:
                journal.unlink(ctx.paths.program(orphan))
            _check_supervisord_config(ctx.paths)
            if not running:
                # the whole fleet starts afresh, as it always did; a partial `up` replaces
                # only the engines it starts and leaves every other orphan running (see
                # `_leave_orphans`): restarting them is not what the operator asked for
                stop = set(strays) if whole_fleet else {p.name for p in plans} | {
                    n for n in strays if n.startswith("_")}
                stale_results = _stop_strays([strays.pop(n) for n in sorted(stop & set(strays))])
                stale_results += _leave_orphans(strays)
                sup.start_daemon()  # autostarts every program file just written
            else:
                added, changed, removed = sup.reread()
        except BaseException as exc:
            not_restored = journal.restore()
            if not running:
                _shut_fresh_supervisord(ctx, sup)
            if isinstance(exc, OSError):  # a read-only or full state folder: `path: reason`
                exc = state_error(exc)
            if not isinstance(exc, MiredoctlError):
                raise
            where = (f"could not restore {', '.join(not_restored)}" if not_restored
                     else "every file this `up` wrote was restored")
            raise MiredoctlError(f"{exc}; {where}", exc.code) from exc
        results: list[ApplyResult] = [*users_created, *stale_results,
                                      *orphans_mod.kept_results(kept, procs)]
        if running:
            # miredoctl's own programs ('_' names): a newer miredoctl may have changed its
            # event listeners (e.g. added `_logstamp`), the inventory may have switched the
            # exporter on, off or moved it; bring them in line, they carry no tunnel state
            for helper in [n for n in (*added, *changed, *removed) if n.startswith("_")]:
                what = "metrics exporter" if helper == EXPORTER else "miredoctl event listener"
                if helper in (*changed, *removed):
                    sup.remove(helper)
                if helper in removed:
                    results.append(ApplyResult(helper, "removed", True, what))
                    continue
                sup.add(helper)
                results.append(ApplyResult(helper, "added" if helper in added else "updated",
                                           True, what))
            for orphan in removed:
                if orphan in orphans:
                    sup.remove(orphan)
                    ctx.paths.config(orphan).unlink(missing_ok=True)
                    results.append(ApplyResult(orphan, "removed", True))
            if whole_fleet:  # engines of instances that left the inventory, left by a dead
                results += _stop_strays([strays.pop(n) for n in sorted(strays)  # supervisord
                                         if n not in rendered])
            for plan in plans:
                if plan.action != "unchanged" and plan.name in strays:
                    # an engine a dead supervisord left holds the TUN device and the pid file:
                    # stop it right before its replacement starts, one instance at a time
                    results += _stop_strays([strays.pop(plan.name)])
                if plan.action == "add" and plan.name in added:
                    sup.add(plan.name)
                elif plan.action == "recreate" and plan.name in changed:
                    sup.remove(plan.name)
                    sup.add(plan.name)
                elif plan.action == "restart":
                    sup.stop(plan.name)
                    sup.start(plan.name)
                elif plan.action == "start":
                    sup.start(plan.name)
        touched = [p.name for p in plans if p.action != "unchanged"]
        infos = sup.wait_up(touched)
        failed = []
        for plan in plans:
            if plan.action == "unchanged":
                results.append(ApplyResult(plan.name, "unchanged", True, plan.reason))
                continue
            info = infos.get(plan.name)
            state = info["statename"] if info else "MISSING"
            if state_of(info) == ProcessStates.RUNNING:
                verb = {"add": "started", "start": "started", "restart": "restarted",
                        "recreate": "recreated"}[plan.action]
                results.append(ApplyResult(plan.name, verb, True,
                                           f"pid {info['pid']} ({plan.reason})"))
            else:
                log = last_lines(sup.tail_log(plan.name), 3) if info else ""
                failed.append(plan)
                results.append(ApplyResult(plan.name, "failed", False,
                                           f"{state}" + (f": {log}" if log else "")))
        if failed:
            _rollback(ctx, sup, plans, saved, procs, results)
            if not running:
                _shut_fresh_supervisord(ctx, sup)
                results.append(ApplyResult("supervisord", "stopped", False,
                                           "it was not running before this `up`"))
        else:  # what `status` says each (re)started instance runs (no git call there)
            gitinfo.record_applied(ctx.paths, [p.name for p in plans if p.action != "unchanged"],
                                   gitinfo.revision(ctx.fleet_dir, template_path(fleet)))
        return plans, results


def _shut_fresh_supervisord(ctx: Context, sup: SupervisordClient) -> None:
    """Stop the supervisord a failed `up` started, with whatever it runs: before that `up`
    nothing ran, and a failed `up` leaves the fleet as it was (its listeners included)."""
    with contextlib.suppress(MiredoctlError, OSError, xmlrpc.client.Error):
        if not sup.running():
            return
        engines = [n for n in sup.processes() if not n.startswith("_")]
        stopped = sup.stop_many(engines)
        wait_recorded(ctx.paths, [n for n, sent in stopped.items() if sent])
        sup.forget(sorted(stopped))
        sup.shutdown()


def unsupervised(paths: StatePaths, procs: dict[str, dict] | None) -> dict[str, FleetProcess]:
    """This fleet's engines that the running supervisord does not hold (`procs`: its
    instances, None when it is gone): what a killed supervisord left behind. miredoctl's own
    helpers (`_exporter`, ...) count only when supervisord is gone: a running one holds them."""
    live = {int(i["pid"]) for i in (procs or {}).values() if i.get("pid")}
    return {name: proc for name, proc in fleet_processes(paths).items()
            if not ({proc.pid, proc.pgid} & live) and (procs is None or name[:1] != "_")}


def stop_fleet_process(proc: FleetProcess, grace: float = 10.0) -> None:
    """Stop what supervisord's stop would: TERM to the process group, KILL after `grace`.

    The group is signalled only when its leader is one of the engine's own proven processes;
    otherwise (the engine's main process died, its group leader gone) each proven member is
    signalled by pid, so nothing outside this fleet's engine can be hit.
    """
    def send(sig: int, pids: tuple[int, ...]) -> None:
        if proc.leads_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, sig)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    send(signal.SIGTERM, proc.members)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in proc.members):
        time.sleep(0.1)
    left = tuple(p for p in proc.members if alive(p))
    if left:  # the worker and helpers too: the group, or each proven member that is left
        send(signal.SIGKILL, left)


def _stop_strays(strays: list[FleetProcess]) -> list[ApplyResult]:
    results = []
    for proc in strays:
        stop_fleet_process(proc)
        results.append(ApplyResult(proc.name, "stale engine stopped", True,
                                   f"pid {proc.pid} was left by a supervisord that died"))
    return results


def _leave_orphans(strays: dict[str, FleetProcess]) -> list[ApplyResult]:
    """Engines a partial `up` leaves running without supervisord: said, not hidden."""
    return [ApplyResult(name, "orphaned", True,
                        f"pid {proc.pid} still runs without supervisord (left as it is; "
                        f"`miredoctl up {name}` or `miredoctl up` restarts it under supervisord)")
            for name, proc in sorted(strays.items()) if not name.startswith("_")]


def check_writable(paths: StatePaths) -> None:
    """Before anything is stopped or started: can an engine and supervisord write here?

    A starting engine writes its pid file into `run/` and supervisord opens its log in
    `logs/`; on a read-only or full state folder the start fails, and a restart would have
    stopped a running engine for nothing. One small file in each proves they can.
    """
    paths.ensure()
    for folder in (paths.run, paths.logs):
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".miredoctl-probe-")
        except OSError as exc:
            raise _unwritable(exc, folder) from exc
        try:
            os.write(fd, b"\0" * 512)
            os.fsync(fd)
        except OSError as exc:
            raise _unwritable(exc, folder) from exc
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _unwritable(exc: OSError, folder: Path) -> MiredoctlError:
    err = state_error(exc, folder)
    return type(err)(f"{err}: an engine started now could not write its pid file and log; "
                     "nothing was stopped or started")


def _rollback(ctx: Context, sup: SupervisordClient, plans: list[Plan],
              saved: dict[str, tuple[str | None, str | None]], procs: dict[str, dict],
              results: list[ApplyResult]) -> None:
    """A failed `up` leaves the fleet as it was: old files back, old processes back."""
    for plan in plans:
        if plan.action == "unchanged":
            continue
        old_conf, old_prog = saved[plan.name]
        before_info = procs.get(plan.name)
        before = before_info["statename"] if before_info else None
        _restore(ctx.paths.config(plan.name), old_conf)
        _restore(ctx.paths.program(plan.name), old_prog)
        sup.stop(plan.name)
        _added, changed, removed = sup.reread()
        if plan.name in removed:
            sup.remove(plan.name)
        elif plan.name in changed:
            sup.remove(plan.name)
            sup.add(plan.name)
        if state_of(before_info) in ACTIVE_STATES:
            sup.start(plan.name)
            results.append(ApplyResult(plan.name, "rolled back", False,
                                       "previous config restored and restarted"))
        elif before is not None:
            results.append(ApplyResult(plan.name, "rolled back", False,
                                       f"previous config restored, left {before.lower()}"))
        else:
            results.append(ApplyResult(plan.name, "rolled back", False, "removed again"))
    sup.wait_up([p.name for p in plans if state_of(procs.get(p.name)) in ACTIVE_STATES])


def down(ctx: Context, names: list[str], *, whole_fleet: bool,
         remove_orphans: list[str] | None = None) -> list[ApplyResult]:
    """Stop the selected engines; the whole fleet also stops its supervisord.

    Under the fleet lock before it looks at supervisord: a `down` during a starting `up` waits
    for it and then stops what it started, instead of finding nothing to stop.
    Whatever supervisord's state: engines a dead supervisord left running are found by their
    pid files and command lines (`state.fleet_processes`) and stopped like supervisord would.
    Nothing here writes to the state folder, so a full or read-only disk cannot keep an
    operator from stopping an instance. `remove_orphans` (instances not in the inventory,
    `down --remove-orphans`) are stopped with the selection and then removed from supervisord
    and the state folder (orphans.forget_files; best effort).
    """
    names = [*names, *(n for n in remove_orphans or () if n not in names)]
    with fleet_lock(ctx.paths, "down"):
        sup = SupervisordClient(ctx.paths)
        running = sup.running()
        procs = sup.processes() if running else None
        strays = unsupervised(ctx.paths, procs)
        results = []
        # every selected engine at once, not one per supervisord tick (0.7 s each)
        stopped = sup.stop_many([n for n in names if n in procs]) if procs is not None else {}
        for name in names:
            if procs is None:
                res = ApplyResult(name, "not running", True, "supervisord not running")
            elif name not in procs:
                res = ApplyResult(name, "not running", True, "not in supervisord")
            elif stopped.get(name):
                res = ApplyResult(name, "stopped", True)
            else:
                res = ApplyResult(name, "not running", True, procs[name]["statename"].lower())
            stray = strays.pop(name, None)
            if stray is not None:
                stop_fleet_process(stray)
                res = ApplyResult(name, "stopped", True,
                                  f"pid {stray.pid}, which ran without supervisord")
            results.append(res)
        if whole_fleet:
            if running:
                # the listener must record every STOPPED before supervisord stops it with its
                # queue: a whole-fleet stop is 2 events per engine arriving at once
                wait_recorded(ctx.paths, [n for n, sent in stopped.items() if sent])
                sup.forget(sorted(stopped))
                sup.shutdown()
                results.append(ApplyResult("supervisord", "stopped", True, sup.where()))
            for name, stray in sorted(strays.items()):  # left the inventory; our helpers
                stop_fleet_process(stray)
                if not name.startswith("_"):
                    results.append(ApplyResult(name, "stopped", True,
                                               f"pid {stray.pid}, which ran without "
                                               "supervisord"))
        if remove_orphans:
            if running and not whole_fleet:
                for name in remove_orphans:
                    if name in (procs or {}):
                        sup.remove(name)
            orphans_mod.forget_files(ctx.paths, remove_orphans)
            gone = set(remove_orphans)  # one line per orphan: `removed` says it was stopped
            results = [r for r in results if r.name not in gone] + [
                ApplyResult(n, "removed", True, "orphan: not in the inventory")
                for n in remove_orphans]
    return results


def wait_recorded(paths: StatePaths, names: list[str], state: str = STOPPED_NAME) -> bool:
    """Wait until each instance's history ends in `state`, i.e. the event listener has
    written every event supervisord queued for it; False when that takes longer than a second
    per 20 instances, at least 5 s (a listener that died is not waited for forever)."""
    deadline = time.monotonic() + max(5.0, 0.05 * len(names))
    pending = set(names)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if _last_state(paths, n) != state}
        if pending:
            time.sleep(0.1)
    return not pending


def _last_state(paths: StatePaths, name: str) -> str | None:
    transitions = history.load(paths.history(name))
    return transitions[-1].state if transitions else None


def restart(ctx: Context, names: list[str]) -> list[ApplyResult]:
    """Stop and start with the config on disk (like supervisorctl; `up` applies changes)."""
    with fleet_lock(ctx.paths, "restart"):
        sup = SupervisordClient(ctx.paths)
        sup.require()
        check_writable(ctx.paths)
        return _restart(ctx, sup, names)


def _restart(ctx: Context, sup: SupervisordClient, names: list[str]) -> list[ApplyResult]:
    results = []
    with fleet_lock(ctx.paths, "restart"):
        procs = sup.processes()
        todo = []
        for name in names:
            if name not in procs:
                results.append(ApplyResult(name, "failed", False,
                                           "not in supervisord yet: run `miredoctl up`"))
                continue
            todo.append(name)
        # all stop signals in one multicall, then all starts: one at a time, each stop waited
        # for supervisord's next tick (about 0.7 s an instance)
        sup.stop_many(todo)
        for name in todo:
            sup.start(name)
        infos = sup.wait_up(todo)
        for name in todo:
            info = infos.get(name, {})
            if info and state_of(info) == ProcessStates.RUNNING:
                results.append(ApplyResult(name, "restarted", True, f"pid {info['pid']}"))
            else:
                results.append(ApplyResult(name, "failed", False, info.get("statename", "?")
                                           + ": " + last_lines(sup.tail_log(name))))
    return results


def reload(ctx: Context, fleet: Fleet, rendered: dict[str, Rendered], names: list[str],
           *, only_changed: bool = False) -> list[ApplyResult]:
    """Re-render, then SIGHUP each selected engine and say what happened to every one of them.

    supervisord's group signal silently skips stopped processes; we signal one by one so a
    stopped instance is reported as "not running" instead of vanishing from the answer.
    `only_changed` leaves instances whose rendered body equals the file on disk alone: a HUP
    to Debian's miredo re-creates the tunnel, so a fleet-wide reload should not HUP them all.
    """
    results = []
    with fleet_lock(ctx.paths, "reload"):
        sup = SupervisordClient(ctx.paths)
        sup.require()
        procs = sup.processes()
        for name in names:
            r = rendered.get(name)
            if r is None:
                results.append(ApplyResult(name, "failed", False, "disabled in the inventory"))
                continue
            old = read_file(ctx.paths.config(name))
            if only_changed and old is not None and body_of(old) == r.body:
                results.append(ApplyResult(name, "unchanged", True,
                                           "rendered config unchanged: not signalled"))
                continue
            try:
                write_atomic(ctx.paths.config(name), r.text)
            except OSError as exc:  # read-only or full: the engine keeps its old config
                results.append(ApplyResult(name, "failed", False,
                                           f"{state_error(exc)}; not signalled"))
                continue
            note = []
            if read_file(ctx.paths.program(name)) not in (None, r.program):
                note.append("command line changed too: `miredoctl up` applies that")
            if r.inst.engine == "miredo":
                note.append("miredo re-creates the tunnel on HUP")
            info = procs.get(name)
            if state_of(info) not in ACTIVE_STATES:
                state = info["statename"].lower() if info else "not in supervisord"
                results.append(ApplyResult(name, "not running", False,
                                           "; ".join([state, "config written", *note])))
                continue
            res = sup.signal(name, "HUP")
            if note and res.ok:
                res.detail = "; ".join([res.detail, *note])
            results.append(res)
        gitinfo.record_applied(ctx.paths, [r.name for r in results
                                           if r.action == "signalled"],
                               gitinfo.revision(fleet.root, template_path(fleet)))
    return results


def diff(ctx: Context, rendered: dict[str, Rendered], names: list[str]) -> list[str]:
    """Unified diffs of rendered files against what is on disk (= what runs)."""
    out: list[str] = []
    for name in names:
        r = rendered.get(name)
        if r is None:
            continue
        for path, new in ((ctx.paths.config(name), r.text), (ctx.paths.program(name), r.program)):
            old = read_file(path)
            old_cmp = body_of(old) if old is not None and path.parent == ctx.paths.configs \
                else old
            new_cmp = r.body if path.parent == ctx.paths.configs else new
            if old_cmp == new_cmp:
                continue
            out.extend(difflib.unified_diff(
                (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"{path} (running)" if old is not None else "/dev/null",
                tofile=f"{name} (rendered)"))
    return out
