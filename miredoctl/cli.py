"""`miredoctl`: the command line (docker compose verbs, supervisorctl states and exit codes).

Every error reaches the user as one line (or one line per inventory problem) and an exit code
from `miredoctl.errors`; a Python traceback is a bug, so the last-resort handler says so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
import xmlrpc.client
from pathlib import Path
from typing import Any

import miredoctl
import miredoctl.access as access
import miredoctl.pipes as pipes
from miredoctl import fleets, gitinfo, ops, service
from miredoctl import logs as logs_mod
from miredoctl import orphans as orphans_mod
from miredoctl import status as status_mod
from miredoctl.errors import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNKNOWN,
    InventoryError,
    MiredoctlError,
    SupervisorUnreachable,
    UsageError,
    one_line,
)
from miredoctl.inventory import DEFAULT_EXPORTER_LISTEN, FIELDS, Fleet
from miredoctl.listeners import timedlog
from miredoctl.selection import Selection, resolve
from miredoctl.state import fleet_lock, state_error
from miredoctl.supervisord import ApplyResult, SupervisordClient, lost_events

LAB_PACKAGE = "teredolab"  # run as a program, never imported: see _run_lab_tool
SHOW_LOG_LINES = 5


def _add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument("--fleet", metavar="DIR", default=default,
                   help="fleet folder of instance YAML files (env MIREDOCTL_FLEET; "
                        "default ./instances)")
    p.add_argument("--state-dir", metavar="DIR", default=default,
                   help="one folder for rendered files, sockets and logs (env "
                        "MIREDOCTL_STATE; default: the three folders below)")
    fleets.add_layout_options(p, default)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress
                   else False, help="machine-readable output")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="instance names or globs")
    p.add_argument("--all", action="store_true", help="every instance")
    p.add_argument("--role", action="append", default=[], choices=("client", "relay", "server"))
    p.add_argument("--tag", action="append", default=[], metavar="T")
    p.add_argument("--host", action="append", default=[], metavar="H",
                   help="instances on host H of hosts.yaml (globs and group names allowed)")


def _add_rolling(p: argparse.ArgumentParser) -> None:
    """A fleet across hosts: how many hosts at a time, and how many failures stop the roll."""
    p.add_argument("--serial", metavar="N|P%", default=None,
                   help="hosts at a time (default 1)")
    p.add_argument("--max-fail", metavar="P%", default=None,
                   help="stop when more than P%% of a batch failed (default 0: at the first)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miredoctl",
        description="Run a Teredo fleet (YAML inventory -> one engine per instance under "
                    "supervisord).",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 a selected instance is not running, "
               "4 unknown instance or supervisord unreachable")
    _add_common(parser, suppress=False)
    parser.add_argument("--version", action="version",
                        version=f"miredoctl {miredoctl.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help_text: str, selection: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p, suppress=True)
        if selection:
            _add_selection(p)
        return p

    cmd("validate", "check the inventory, template and rendered configs; touch nothing",
        selection=False)
    p = cmd("config", "print the rendered config of instances")
    p.add_argument("--origin", action="store_true",
                   help="print the merged values and the file:line that set each one")
    p = cmd("diff", "show what `up` would change compared with what runs")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are changes")
    p = cmd("up", "validate, render and start/restart only what changed (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--remove-orphans", action="store_true",
                   help="stop and remove instances supervisord runs that the inventory no "
                        "longer has (default: list them and leave them running)")
    p.add_argument("--require-clean", action="store_true",
                   help="refuse when the fleet folder or the template has uncommitted edits "
                        "or the fleet is not in git")
    _add_rolling(p)
    p = cmd("down", "stop instances (default: all, which also stops the fleet's supervisord)")
    p.add_argument("--remove-orphans", action="store_true",
                   help="also stop and remove instances the inventory no longer has")
    _add_rolling(cmd("restart", "stop and start instances with their current rendered config"))
    p = cmd("reload", "re-render and send SIGHUP to each selected running engine")
    _add_rolling(p)
    p.add_argument("--changed", action="store_true",
                   help="only the instances whose rendered config changed")
    p = cmd("status", "one line per instance: process and tunnel state")
    p.add_argument("-v", "--verbose", action="store_true", help="detail view per instance")
    p = cmd("show", "detail view (like `wg show`) of instances")
    p = cmd("wait", "wait until instances run and clients are qualified")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    p = cmd("logs", "instance logs interleaved by time, prefixed with the instance name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                   help="the last N lines of the merged logs (default 20)")
    p.add_argument("--since", metavar="WHEN",
                   help="only lines from then on: 10m, 2h, 1d, 14:05, 2026-11-26 14:05:00, "
                        "2026-11-26T13:05:00Z (local time unless a zone is given)")
    p = cmd("metrics", "the whole fleet in the Prometheus text format (docs/metrics.md)",
            selection=False)
    p.add_argument("--textfile", metavar="DIR",
                   help="write DIR/miredoctl.prom atomically (for node_exporter's textfile "
                        "collector) instead of printing")
    p = cmd("exporter", "serve the fleet's metrics over HTTP (/metrics) until stopped",
            selection=False)
    p.add_argument("--listen", default=DEFAULT_EXPORTER_LISTEN, metavar="ADDR:PORT",
                   help=f"address to serve on (default {DEFAULT_EXPORTER_LISTEN}; IPv6 as "
                        "[::1]:9531)")
    cmd("demo", "build the lab, run the default fleet, ping through it (from the repo root)",
        selection=False)
    p = cmd("hosts", "a fleet across hosts: each host's reachability, teredo-fleet version, "
            "supervisord and instances", selection=False)
    p.add_argument("--host", action="append", default=[], metavar="H",
                   help="only these hosts of hosts.yaml (globs and group names allowed)")
    p.add_argument("words", nargs="*", metavar="bootstrap",
                   help="hosts bootstrap [H ...]: prepare hosts (Debian packages, folders, "
                        "a venv with this teredo-fleet); idempotent")
    fleets.add_parsers(cmd)
    p = cmd("completion", "print the shell completion script: eval \"$(miredoctl completion "
            "bash)\" (docs/miredoctl.md)", selection=False)
    p.add_argument("shell", choices=("bash", "zsh"))
    p = cmd("lab", "build, remove or inspect the demo network in namespaces", selection=False)
    p.add_argument("action", choices=("up", "down", "status", "check"))
    # the lab owns its default prefix (the one the default fleet in instances/ names)
    p.add_argument("--prefix", default=None,
                   help="namespace name prefix (default: env MIREDOCTL_LAB_PREFIX, else the "
                        "lab's default, which the default fleet uses)")
    p.add_argument("--hosts", action="store_true",
                   help="up: the server, relay and client namespaces become hosts (an sshd "
                        "each) and a fleet across them is written; `lab up` prints how to use "
                        "it (docs/miredoctl.md, \"The lab as hosts\")")
    return parser


def _context(args: argparse.Namespace) -> ops.Context:
    fleet = Path(args.fleet or os.environ.get("MIREDOCTL_FLEET") or "instances")
    return ops.Context(fleet, fleets.paths_from_args(fleet, args))


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(list(args.names), list(args.role), list(args.tag), bool(args.all))


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text:
        print(text)


def _results_text(results: list[ApplyResult]) -> str:
    width = max((len(r.name) for r in results), default=0)
    return "\n".join(f"{r.name.ljust(width)}  {r.action}" + (f": {r.detail}" if r.detail else "")
                     for r in results)


def _results_json(results: list[ApplyResult]) -> list[dict[str, Any]]:
    return [vars(r) for r in results]


def _procs_or_none(ctx: ops.Context) -> tuple[dict[str, dict] | None, SupervisordClient]:
    sup = SupervisordClient(ctx.paths)
    if sup.running():
        return sup.processes(), sup
    return None, sup


def _known(procs: dict[str, dict] | None, strays: dict[str, Any]) -> tuple[str, ...]:
    """Names only the running processes know: supervisord's, and engines running without it."""
    return tuple(sorted(set(procs or ()) | set(strays)))


def _fleet_or_running(ctx: ops.Context) -> Fleet:
    """For commands that must work while the inventory is being edited (down, status, logs):
    a broken inventory is a warning, and supervisord's own list of instances is used."""
    try:
        return ctx.load()
    except InventoryError as exc:
        print(f"miredoctl: warning: the inventory has {len(exc.problems)} problem(s) (see "
              "`miredoctl validate`); acting on what supervisord runs", file=sys.stderr)
        return Fleet(ctx.fleet_dir, {}, None)


# -- commands -------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet, rendered = ops.validate(ctx)
    _emit(args, {"ok": True, "instances": fleet.names, "rendered": sorted(rendered)},
          f"ok: {len(fleet.names)} instances valid ({', '.join(fleet.names)}); "
          f"{len(rendered)} configs rendered and checked")
    return EXIT_OK


def cmd_config(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet = ctx.load()
    names = resolve(fleet, _selection(args), default_all=True)
    enabled = [n for n in names if fleet.instances[n].enabled]
    rendered = ops.render_fleet(fleet, ctx.paths, enabled)
    data = {}
    chunks = []
    for name in names:
        inst = fleet.instances[name]
        entry: dict[str, Any] = {
            "file": str(inst.file), "values": inst.values,
            "origins": {k: str(v) for k, v in inst.origins.items()}}
        if name in rendered:
            entry.update(config=rendered[name].text, command=rendered[name].command,
                         sha256=rendered[name].sha256)
        data[name] = entry
        if args.origin:
            width = max(len(k) for k in inst.values)
            lines = [f"# {name}"] + [
                f"{k.ljust(width)}  {json.dumps(inst.values[k])}  ({inst.origins[k]})"
                for k in FIELDS if k in inst.values]
            chunks.append("\n".join(lines))
        elif name in rendered:
            chunks.append(f"# ==> {name}: {ctx.paths.config(name)}\n{rendered[name].text}"
                          f"# command: {' '.join(rendered[name].command)}")
        else:
            chunks.append(f"# ==> {name}: disabled (enabled: false), nothing rendered")
    _emit(args, data, "\n\n".join(chunks))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet, rendered = ops.validate(ctx, checkconf=False)
    names = resolve(fleet, _selection(args), default_all=True)
    procs, _sup = _procs_or_none(ctx)
    lines = ops.diff(ctx, rendered, names)
    plans = ops.plan_up(ctx, rendered, [n for n in names if n in rendered], procs or {})
    plan_text = "\n".join(f"{p.action:9}  {p.name}: {p.reason}" for p in plans)
    _emit(args, {"diff": "".join(lines), "plan": [vars(p) for p in plans]},
          "".join(lines) + ("\n" if lines else "") + plan_text)
    return EXIT_ERROR if args.exit_code and (lines or any(p.action != "unchanged"
                                                          for p in plans)) else EXIT_OK


def cmd_up(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet = ctx.load()
    sel = _selection(args)
    if args.remove_orphans and not sel.whole_fleet:
        raise UsageError("--remove-orphans goes with the whole fleet (no selection, or --all): "
                         "orphans are the instances outside every selection")
    names = resolve(fleet, sel, default_all=True)
    plans, results = ops.up(ctx, names, whole_fleet=sel.whole_fleet,
                            explicit=bool(sel.names), dry_run=args.dry_run,
                            remove_orphans=args.remove_orphans)
    if args.dry_run:
        _emit(args, {"plan": [vars(p) for p in plans]},
              "\n".join(f"{p.action:9}  {p.name}: {p.reason}" for p in plans))
        return EXIT_OK
    _emit(args, {"results": _results_json(results)}, _results_text(results))
    warning = orphans_mod.warning(results)
    if warning:
        print(warning, file=sys.stderr)
    return EXIT_OK if all(r.ok for r in results) else EXIT_ERROR


def cmd_down(args: argparse.Namespace, ctx: ops.Context) -> int:
    # --remove-orphans needs the real inventory: with a broken one, everything looks orphaned
    fleet = ctx.load() if args.remove_orphans else _fleet_or_running(ctx)
    sel = _selection(args)
    procs, _sup = _procs_or_none(ctx)
    strays = status_mod.unsupervised_engines(ctx.paths, procs)
    names = resolve(fleet, sel, default_all=True, extra_known=_known(procs, strays))
    gone = orphans_mod.orphans(fleet, _known(procs, strays)) if args.remove_orphans else None
    results = ops.down(ctx, names, whole_fleet=sel.whole_fleet, remove_orphans=gone)
    _emit(args, {"results": _results_json(results)}, _results_text(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_ERROR


def cmd_restart(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet = ctx.load()
    names = resolve(fleet, _selection(args), default_all=False)
    results = ops.restart(ctx, names)
    _emit(args, {"results": _results_json(results)}, _results_text(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_ERROR


def cmd_reload(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet, rendered = ops.validate(ctx)
    names = resolve(fleet, _selection(args), default_all=False)
    results = ops.reload(ctx, fleet, rendered, names, only_changed=args.changed)
    _emit(args, {"results": _results_json(results)}, _results_text(results))
    if any(r.action == "failed" for r in results):
        return EXIT_ERROR
    return EXIT_NOT_RUNNING if any(r.action == "not running" for r in results) else EXIT_OK


def _status_rows(args: argparse.Namespace, ctx: ops.Context
                 ) -> tuple[Fleet, list[status_mod.InstanceStatus], SupervisordClient, bool]:
    fleet = _fleet_or_running(ctx)
    procs, sup = _procs_or_none(ctx)
    strays = status_mod.unsupervised_engines(ctx.paths, procs)
    names = resolve(fleet, _selection(args), default_all=True,
                    extra_known=_known(procs, strays))
    return (fleet, status_mod.collect(fleet, ctx.paths, names, procs, strays=strays), sup,
            procs is not None)


def _status_code(rows: list[status_mod.InstanceStatus], reachable: bool) -> int:
    if not reachable:
        return EXIT_UNKNOWN
    return EXIT_OK if all(r.up for r in rows if r.enabled) else EXIT_NOT_RUNNING


def cmd_status(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet, rows, sup, reachable = _status_rows(args, ctx)
    if args.verbose:  # like `systemctl status`: the last log lines say why something is down
        text = "\n\n".join(
            status_mod.detail(r, fleet.instances.get(r.name),
                              logs_mod.collect(ctx.paths, [r.name], last=SHOW_LOG_LINES))
            for r in rows)
    else:
        text = status_mod.table(rows)
    lost = lost_events(ctx.paths) if reachable else {}
    _emit(args, {"supervisord": {"running": reachable, "socket": sup.where(),
                                 "lost_events": lost},
                 "instances": [r.to_json() for r in rows]}, text)
    if lost:  # restart counts and FLAPPING rest on every PROCESS_STATE event
        print("miredoctl: supervisord dropped events since it started ("
              + ", ".join(f"{pool}: {n}" for pool, n in sorted(lost.items()))
              + f"; 'event buffer overflowed' in {ctx.paths.supervisord_log}): restart counts, "
              "FLAPPING and the timed logs may be incomplete", file=sys.stderr)
    if not reachable:
        orphaned = [r.name for r in rows if r.state == status_mod.ORPHANED]
        print(f"miredoctl: supervisord for this fleet is not running (looked for "
              f"{sup.where()})" + (f"; {len(orphaned)} engine(s) run without it (ORPHANED: "
                                   f"{', '.join(orphaned)}): `miredoctl up` restarts them "
                                   "under supervisord, `miredoctl down` stops them"
                                   if orphaned else ""), file=sys.stderr)
    return _status_code(rows, reachable)


def cmd_show(args: argparse.Namespace, ctx: ops.Context) -> int:
    args.verbose = True
    return cmd_status(args, ctx)


def cmd_wait(args: argparse.Namespace, ctx: ops.Context) -> int:
    """For scripts and the demo: block until selected instances are usable, or time out."""
    deadline = time.monotonic() + args.timeout
    while True:
        _fleet, rows, sup, reachable = _status_rows(args, ctx)
        rows = [r for r in rows if r.enabled]
        if reachable and all(r.ready for r in rows):
            _emit(args, {"ready": True, "instances": [r.to_json() for r in rows]},
                  "ready: " + ", ".join(r.name for r in rows))
            return EXIT_OK
        if time.monotonic() >= deadline:
            waiting = [r.name for r in rows if not r.ready]
            _emit(args, {"ready": False, "instances": [r.to_json() for r in rows]},
                  status_mod.table(rows))
            if not reachable:
                raise SupervisorUnreachable(f"supervisord for this fleet is not running "
                                            f"(looked for {sup.where()})")
            print(f"miredoctl: not ready after {args.timeout:g}s: {', '.join(waiting)}",
                  file=sys.stderr)
            return EXIT_NOT_RUNNING
        time.sleep(0.25)


def cmd_logs(args: argparse.Namespace, ctx: ops.Context) -> int:
    fleet = _fleet_or_running(ctx)
    names = resolve(fleet, _selection(args), default_all=True,
                    extra_known=logs_mod.known_names(ctx.paths))
    if args.lines < 0:
        raise UsageError("-n must be 0 or more")
    since = timedlog.parse_since(args.since, time.time()) if args.since else None
    if args.json and not args.follow:
        lines = logs_mod.collect(ctx.paths, names, since, args.lines)
        _emit(args, {"lines": [vars(ln) for ln in lines]}, "")
        return EXIT_OK
    # with --follow --json: one JSON object per line (JSON Lines), as `docker compose` does
    logs_mod.show(ctx.paths, names, args.lines, args.follow, since=since, as_json=args.json)
    return EXIT_OK


def _collector(ctx: ops.Context) -> Any:
    # imported here: prometheus-client is only needed by these two commands
    from miredoctl.metrics import FleetCollector
    return FleetCollector(ctx.fleet_dir, ctx.paths)


def cmd_metrics(args: argparse.Namespace, ctx: ops.Context) -> int:
    """One scrape, printed or written for node_exporter; a fleet that is down is still a
    valid answer (teredo_supervisord_up 0), so the exit code is 0 unless writing failed."""
    from miredoctl.metrics import exposition, write_textfile
    data = exposition(_collector(ctx))
    if args.textfile:
        write_textfile(Path(args.textfile), data)
    else:
        sys.stdout.write(data.decode())
    return EXIT_OK


def cmd_exporter(args: argparse.Namespace, ctx: ops.Context) -> int:
    from miredoctl.exporter import listen_address, serve
    listen_address(args.listen)  # a usage error before anything is gathered
    serve(_collector(ctx), args.listen)
    return EXIT_OK


def _run_lab_tool(argv: list[str]) -> int:
    """Hand `lab` and `demo` to the lab package, a separate program (`python -m teredolab`).

    The manager never imports the lab (production code must not depend on test tooling), so
    these two commands run it as a child with the same interpreter and return its exit code.
    Only its presence is looked up here, without importing it: a manager installed without the
    lab says so in one line.
    """
    if importlib.util.find_spec(LAB_PACKAGE) is None:
        raise MiredoctlError(f"the lab is not installed (package {LAB_PACKAGE}; it ships in "
                             "this project's source tree: pip install -e .)")
    try:
        return subprocess.run([sys.executable, "-m", LAB_PACKAGE, *argv], check=False).returncode
    except KeyboardInterrupt:  # the child got the same Ctrl-C and cleans up after itself
        return 130


def cmd_lab(args: argparse.Namespace, ctx: ops.Context) -> int:
    """The demo network, built by the lab package; the default fleet expects its default prefix."""
    argv = ["lab", args.action]
    if args.prefix is not None:
        argv += ["--prefix", args.prefix]
    if args.hosts:
        argv.append("--hosts")
    if args.json:
        argv.append("--json")
    return _run_lab_tool(argv)


def cmd_demo(args: argparse.Namespace, ctx: ops.Context) -> int:
    return _run_lab_tool(["demo"])


def cmd_completion(args: argparse.Namespace) -> int:
    """Commands, options and instance names for bash or zsh (miredoctl/completion.py)."""
    from miredoctl import completion
    sys.stdout.write(completion.script(build_parser(), args.shell))
    return EXIT_OK


def cmd_hosts(args: argparse.Namespace, ctx: ops.Context) -> int:
    """Only a fleet with hosts.yaml has hosts (miredoctl/remote/commands.py answers there)."""
    raise UsageError(f"{ctx.fleet_dir}: no hosts.yaml: this fleet runs on this machine only")


# Commands that change the fleet take the fleet lock before they look at anything (waiting
# their turn); the read-only ones (status, show, wait, logs, diff, config, metrics, `up
# --dry-run`) take none, so they answer while a long `up` runs (docs/miredoctl.md).
CHANGING = ("up", "down", "restart", "reload")

COMMANDS = {
    "validate": cmd_validate, "config": cmd_config, "diff": cmd_diff, "up": cmd_up,
    "down": cmd_down, "restart": cmd_restart, "reload": cmd_reload, "status": cmd_status,
    "show": cmd_show, "wait": cmd_wait, "logs": cmd_logs, "demo": cmd_demo, "lab": cmd_lab,
    "metrics": cmd_metrics, "exporter": cmd_exporter, "hosts": cmd_hosts,
    "service": service.cmd_service,
}


def _across_hosts(args: argparse.Namespace, ctx: ops.Context) -> bool:
    """A fleet folder with hosts.yaml is driven through the hosts' agents (miredoctl/remote),
    unless this process is such an agent (MIREDOCTL_THIS_HOST) acting on its own share."""
    if os.environ.get("MIREDOCTL_THIS_HOST") is not None or args.command == "lab":
        return False  # (the lab reads no fleet: `lab down` with MIREDOCTL_FLEET set works)
    multi = any((ctx.fleet_dir / n).is_file() for n in ("hosts.yaml", "hosts.yml"))
    if not multi:
        if getattr(args, "host", None):
            raise UsageError("--host needs a fleet across hosts (hosts.yaml in the fleet folder)")
        return False
    if args.command not in ("status", "show", "up", "down", "restart", "reload", "wait",
                            "validate", "hosts", "logs", "config", "diff", "metrics"):
        raise UsageError(f"`{args.command}` does not work across hosts yet; run it on the "
                         "host (or for the instances without host: here, without hosts.yaml)")
    return True


def main(argv: list[str] | None = None) -> int:
    return pipes.flushed(_main(argv))


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        access.require_root(args.command)  # members of the miredoctl group only read
        if args.command == "completion":  # no fleet folder needed
            return cmd_completion(args)
        if args.command == "ls":  # every fleet of the host: no fleet folder needed
            return fleets.cmd_ls(args)
        ctx = _context(args)
        across = _across_hosts(args, ctx)
        if args.command == "up" and os.environ.get("MIREDOCTL_THIS_HOST") is None:
            # (an agent's fleet is the commit the controller checked and shipped; across
            # hosts the controller says itself which commit the hosts got)
            gitinfo.check_clean(ctx.fleet_dir, args.require_clean, warn=not across)
        if across:
            from miredoctl.remote import commands as remote_commands  # only with hosts.yaml
            return remote_commands.run(args, ctx)
        if args.command in CHANGING and not getattr(args, "dry_run", False):
            with fleet_lock(ctx.paths, args.command):
                return COMMANDS[args.command](args, ctx)
        return COMMANDS[args.command](args, ctx)
    except InventoryError as exc:
        if args.command == "validate" and args.json:  # the answer, for scripts and editors
            _emit(args, {"ok": False, "problems": [vars(p) for p in exc.problems]}, "")
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"miredoctl: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return exc.code
    except MiredoctlError as exc:
        print(f"miredoctl: {one_line(str(exc))}", file=sys.stderr)
        return exc.code
    except xmlrpc.client.Fault as exc:
        print(f"miredoctl: supervisord refused: {one_line(exc.faultString)}", file=sys.stderr)
        return EXIT_ERROR
    except (ConnectionError, TimeoutError) as exc:
        if isinstance(exc, BrokenPipeError) and pipes.stdout_gone():
            return pipes.quiet()  # the reader stopped early (`status | head -1`): not an error
        print(f"miredoctl: supervisord connection failed: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if not exc.filename:
            return _internal_error(exc)
        # a file the system would not let us read or write (a read-only or full state
        # folder, a permission): `path: reason`, not a bug of ours
        print(f"miredoctl: {state_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    """The promise is "never a traceback": a failure nobody foresaw is our bug; say so."""
    print(f"miredoctl: internal error ({type(exc).__name__}: {one_line(str(exc))}"
          f"{_where(exc)}); please report it (MIREDOCTL_DEBUG=1 shows the traceback)",
          file=sys.stderr)
    if os.environ.get("MIREDOCTL_DEBUG"):
        raise exc
    return EXIT_ERROR


def _where(exc: BaseException) -> str:
    """` at FILE:LINE` of the innermost frame, so the one line of a rare failure (seen once,
    under load) already says where it happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    path = Path(last.filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path(__file__).resolve().parents[1])
    return f" at {path}:{last.lineno}"


if __name__ == "__main__":
    sys.exit(main())
