"""miredoctl's commands on a fleet across hosts (a fleet folder with `hosts.yaml`).

The controller validates the whole inventory itself, works out which instances of which host a
command touches, and runs the same command on each host through the agent (`agent.py`), with
that host's own instance names. `up`, `reload` and `restart` roll: `--serial` hosts at a time
(default 1), stopping when more than `--max-fail` percent of a batch failed (default 0: at the
first failure); every host is reported as done, failed (why) or not attempted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from miredoctl import ops
from miredoctl import orphans as orphans_mod
from miredoctl import status as status_mod
from miredoctl.errors import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_UNKNOWN, UsageError
from miredoctl.inventory import Fleet
from miredoctl.listeners import timedlog
from miredoctl.remote import hosts as hosts_mod
from miredoctl.remote import sshdirect
from miredoctl.remote.orchestrate import (
    LOCAL,
    Controller,
    HostResult,
    parse_percent,
    parse_serial,
)
from miredoctl.remote.schema import EXIT_UNREACHABLE
from miredoctl.selection import Selection, resolve

SUPPORTED = ("status", "show", "up", "down", "restart", "reload", "wait", "validate")
ROLLING = ("up", "reload", "restart")


def _selected(args: argparse.Namespace, fleet: Fleet, hosts: hosts_mod.HostsFile, *,
              default_all: bool) -> tuple[Selection, dict[str, list[str]]]:
    sel = Selection(list(args.names), list(args.role), list(args.tag), bool(args.all),
                    hosts=list(getattr(args, "host", []) or []))
    if sel.hosts:
        sel.host_names = set(hosts.expand(sel.hosts))
    names = resolve(fleet, sel, default_all=default_all)
    by_host: dict[str, list[str]] = {}
    for name in names:
        inst = fleet.instances.get(name)
        if inst is not None:
            by_host.setdefault(inst.host or LOCAL, []).append(name)
    order = [*hosts.hosts, LOCAL]  # hosts.yaml order: the order a rolling command follows
    return sel, {h: by_host[h] for h in order if h in by_host}


def _host_args(sel: Selection, by_host: dict[str, list[str]], command: list[str],
               whole_default: list[str]) -> dict[str, list[str]]:
    """The names each host is told: none (its whole share, which lets `up`/`down` remove its
    orphans) when the selection is the whole fleet or whole hosts, else its own names."""
    whole = sel.whole_fleet or not (sel.names or sel.roles or sel.tags)
    return {h: [*command, *(whole_default if whole else names)] for h, names in by_host.items()}


def run(args: argparse.Namespace, ctx: ops.Context) -> int:
    hosts = hosts_mod.load_checked(ctx.fleet_dir)
    controller = Controller(ctx.fleet_dir, ctx.paths.root, hosts)
    if args.command == "validate":
        fleet, rendered = ops.validate(ctx)
        _emit(args, {"ok": True, "instances": fleet.names, "rendered": sorted(rendered),
                     "hosts": sorted(hosts.hosts)},
              f"ok: {len(fleet.names)} instances valid on {len(hosts.hosts)} hosts; "
              f"{len(rendered)} configs rendered and checked")
        return EXIT_OK
    if args.command in ("status", "show"):
        return _status(args, ctx, controller)
    if args.command == "hosts":
        words = list(getattr(args, "words", []) or [])
        if words[:1] == ["bootstrap"]:
            return _bootstrap(args, controller, words[1:])
        if words:
            raise UsageError(f"hosts {words[0]}: unknown; `hosts` or `hosts bootstrap [H ...]`")
        return _hosts(args, controller)
    if args.command == "logs":
        return _logs(args, ctx, controller)
    if args.command == "metrics":
        return _metrics(args, controller)
    if args.command in ("config", "diff"):
        from miredoctl.remote import views
        fleet = ctx.load()
        sel, by_host = _selected(args, fleet, controller.hosts, default_all=True)
        if args.command == "config":
            argv = ["config", *(["--origin"] if args.origin else [])]
            return views.config(args, controller, _host_args(sel, by_host, argv, []))
        argv = ["diff", *(["--exit-code"] if args.exit_code else [])]
        return views.diff(args, controller, _host_args(sel, by_host, argv, []))
    return _action(args, ctx, controller)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text:
        print(text)


# -- logs -----------------------------------------------------------------------------------
def _logs(args: argparse.Namespace, ctx: ops.Context, controller: Controller) -> int:
    """The last lines of every selected host, merged by time (each host stamps its own lines
    with its own clock: keep the hosts' clocks in sync, NTP, for a true order)."""
    if args.lines < 0:
        raise UsageError("-n must be 0 or more")
    fleet = ctx.load()
    sel, by_host = _selected(args, fleet, controller.hosts, default_all=True)
    argv = ["logs", "-n", str(args.lines), *(["--since", args.since] if args.since else [])]
    if args.follow:
        return _follow(args, controller, _host_args(sel, by_host, [*argv, "-f"], []))
    results = controller.run(_host_args(sel, by_host, argv, []), ok_codes=(0,))
    lines: list[dict[str, Any]] = []
    code = EXIT_OK
    for host in by_host:
        res = results.get(host) or HostResult(host, "not attempted")
        if res.outcome == "done" and isinstance(res.result, dict):
            lines += [{**ln, "host": host} for ln in res.result.get("lines", [])]
            continue
        code = EXIT_UNREACHABLE if res.outcome == "unreachable" else max(code, EXIT_ERROR)
        print(f"miredoctl: {host}: {res.outcome}" + (f" ({res.detail})" if res.detail else ""),
              file=sys.stderr)
    lines.sort(key=lambda ln: (ln.get("time") is not None, ln.get("time") or 0.0))
    lines = lines[-args.lines:] if args.lines else []
    width = max((len(ln["host"]) + 1 + len(ln["name"]) for ln in lines), default=0)
    _emit(args, {"lines": lines}, "\n".join(
        f"{(ln['host'] + '/' + ln['name']).ljust(width)} | "
        f"{timedlog.display_time(ln.get('time'))} {ln['text']}" for ln in lines))
    return code


def _follow(args: argparse.Namespace, controller: Controller,
            per_host: dict[str, list[str]]) -> int:
    """`logs -f`: a long-running agent per host over plain ssh, merged by time (follow.py)."""
    from miredoctl.remote import follow, schema
    remote = [h for h in per_host if h != LOCAL]
    direct = controller.direct(remote) if remote else {}
    if direct is None:
        raise UsageError("logs -f across hosts needs plain ssh to every selected host (no "
                         "templated hosts.yaml values, passwords, other connection or become "
                         "methods, MIREDOCTL_REMOTE_VIA=ansible); use logs -n/--since")
    targets: dict[str, sshdirect.Target | follow.LocalTarget] = dict(direct)
    if LOCAL in per_host:
        targets[LOCAL] = follow.LocalTarget(controller.fleet_dir, controller.state_dir)
    b = controller.bundle if remote else None
    common = ["--commit", b.commit if b else "local", "--expect", schema.identity(),
              "--install", schema.install_id(), *(["--dirty"] if b and b.dirty else []), "--"]
    return follow.follow(targets, {h: [*common, *per_host[h]] for h in per_host},
                         b.b64 if b else "", args.lines, as_json=args.json)


# -- metrics --------------------------------------------------------------------------------
def _metrics(args: argparse.Namespace, controller: Controller) -> int:
    """Every host's exposition, merged with a `host` label (metricsmerge.py); a host that
    gave none is named on stderr and the command exits 5 (unreachable) or 1, after printing
    (or writing --textfile) what the others gave."""
    from miredoctl.remote import metricsmerge
    names = list(controller.hosts.hosts)
    results = controller.run({h: ["metrics"] for h in names}, ok_codes=(0,))
    texts = {}
    code = EXIT_OK
    for h in names:
        res = results[h]
        if res.outcome == "done" and isinstance(res.result, dict):
            texts[h] = str(res.result.get("text") or "")
            continue
        code = EXIT_UNREACHABLE if res.outcome == "unreachable" else max(code, EXIT_ERROR)
        print(f"miredoctl: {h}: {res.outcome}" + (f" ({res.detail})" if res.detail else ""),
              file=sys.stderr)
    data = metricsmerge.merge(texts)
    if args.textfile:
        from pathlib import Path

        from miredoctl.metrics import write_textfile
        write_textfile(Path(args.textfile), data.encode())
    else:
        sys.stdout.write(data)
    return code


# -- hosts bootstrap ------------------------------------------------------------------------
def _bootstrap(args: argparse.Namespace, controller: Controller, patterns: list[str]) -> int:
    """Prepare hosts (Debian packages, folders, miredoctl's venv with this teredo-fleet), all
    at once; each step runs only when needed, and every host says what it found or did."""
    from miredoctl.remote import provision
    hosts = controller.hosts
    names = hosts.expand([*patterns, *args.host]) if patterns or args.host else list(hosts.hosts)
    refused = {h: why for h in names if (why := provision.managed_python(controller, h))}
    results = provision.setup_hosts(controller, names, packages=True)
    rows = []
    for h in names:
        r = results[h]
        if r.outcome == "failed" and h in refused and not r.detail:
            r.detail = refused[h]
        rows.append(r.to_json())
    _emit(args, {"hosts": rows}, "\n".join(
        f"{r['host']}: {r['outcome']}" + (f" ({r['detail']})" if r["detail"] else "")
        + "".join(f"\n  {s}" for s in r["steps"]) for r in rows))
    if any(r["outcome"] == "unreachable" for r in rows):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(r["outcome"] in ("changed", "unchanged") for r in rows) else EXIT_ERROR


# -- hosts ----------------------------------------------------------------------------------
def _hosts(args: argparse.Namespace, controller: Controller) -> int:
    """Every host of hosts.yaml (or of --host), whether or not instances run there: an
    agent `status` each, in parallel, summarised per host."""
    hosts = controller.hosts
    names = hosts.expand(args.host) if args.host else list(hosts.hosts)
    results = controller.run({h: ["status"] for h in names}, ok_codes=(0, 3, 4))
    rows = []
    for h in names:
        res = results[h]
        doc = res.result if isinstance(res.result, dict) else {}
        inst = doc.get("instances") or []
        rows.append({
            "host": h, "address": hosts.hosts[h].address, "reachable": res.outcome != "unreachable",
            "outcome": res.outcome, "version": res.version,
            "supervisord": (doc.get("supervisord") or {}).get("running"),
            "instances": len(inst), "running": sum(1 for r in inst if r.get("state") == "RUNNING"),
            "groups": sorted(hosts.hosts[h].groups - {"all"}), "error": res.detail
            if res.outcome != "done" else ""})
    head = ("HOST", "ADDRESS", "REACHABLE", "VERSION", "SUPERVISORD", "INSTANCES", "GROUPS",
            "ERROR")
    lines = [head] + [(
        r["host"], r["address"] or "-", "yes" if r["reachable"] else "NO", r["version"] or "-",
        {True: "running", False: "stopped", None: "-"}[r["supervisord"]],
        f"{r['running']}/{r['instances']} running", ",".join(r["groups"]) or "-",
        r["error"][:200]) for r in rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    _emit(args, {"hosts": rows}, "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in lines))
    if any(not r["reachable"] for r in rows):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(r["outcome"] == "done" for r in rows) else EXIT_ERROR


# -- status ---------------------------------------------------------------------------------
def _status(args: argparse.Namespace, ctx: ops.Context, controller: Controller) -> int:
    fleet = ctx.load()
    sel, by_host = _selected(args, fleet, controller.hosts, default_all=True)
    results = controller.run(_host_args(sel, by_host, ["status"], []), ok_codes=(0, 3, 4))
    rows: list[dict[str, Any]] = []
    code = EXIT_OK
    for host, names in by_host.items():
        res = results.get(host) or HostResult(host, "not attempted")
        got = (res.result or {}).get("instances") if isinstance(res.result, dict) else None
        if got is not None and res.outcome == "done":
            for row in got:
                rows.append({**row, "host": host})
            if res.rc in (EXIT_NOT_RUNNING, EXIT_UNKNOWN):  # 4: its supervisord is down
                code = max(code, res.rc)
            continue
        state = "UNREACHABLE" if res.outcome == "unreachable" else "UNKNOWN"
        code = EXIT_UNREACHABLE if res.outcome == "unreachable" else max(code, EXIT_UNKNOWN)
        for name in names:
            inst = fleet.instances[name]
            rows.append({"name": name, "host": host, "role": inst.role, "engine": inst.engine,
                         "state": state, "error": res.detail or res.outcome})
    if any(r["state"] == "UNREACHABLE" for r in rows):
        code = EXIT_UNREACHABLE
    _emit(args, {"hosts": [results[h].to_json() for h in results], "instances": rows},
          _table(rows))
    return code


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("NAME", "HOST", "ROLE", "ENGINE", "STATE", "PID", "UPTIME", "TUNNEL",
            "ADDRESS / BOUND", "PEERS", "ERROR")
    lines = [head]
    for r in rows:
        where = r.get("address") or ", ".join(r.get("bound") or []) or "-"
        lines.append((r["name"], r["host"], r.get("role") or "-", r.get("engine") or "-",
                      r["state"], str(r.get("pid") or "-"),
                      status_mod.human_duration(r.get("uptime")),
                      r.get("tunnel_state") or "-", where,
                      "-" if r.get("peers") is None else str(r["peers"]),
                      (r.get("error") or "")[:200] if r["state"] in ("UNREACHABLE", "UNKNOWN")
                      else ""))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)


# -- up, down, restart, reload, wait ----------------------------------------------------------
def _action(args: argparse.Namespace, ctx: ops.Context, controller: Controller) -> int:
    command = args.command
    if command in ("up", "reload", "restart"):
        # the whole inventory and every template render, before any host is touched; the
        # config checkers (miredo-checkconf, teredo-engine --check: a process per instance)
        # run on each host, before that host touches anything, so they are not run twice
        fleet, _rendered = ops.validate(ctx, checkconf=False)
    else:
        fleet = ctx.load()
    default_all = command not in ("reload", "restart")
    sel, by_host = _selected(args, fleet, controller.hosts, default_all=default_all)
    argv = [command]
    if command == "up" and args.dry_run:
        argv.append("--dry-run")
    if command in ("up", "down") and getattr(args, "remove_orphans", False):
        # each host removes its own orphans; `up` only for whole hosts (miredoctl/orphans.py)
        if command == "up" and (sel.names or sel.roles or sel.tags) and not sel.whole_fleet:
            raise UsageError("--remove-orphans goes with the whole fleet or whole hosts "
                             "(no selection, --all or --host): orphans are the instances "
                             "outside every selection")
        argv.append("--remove-orphans")
    if command == "reload" and args.changed:
        argv.append("--changed")
    if command == "wait":
        argv += ["--timeout", str(args.timeout)]
    per_host = _host_args(sel, by_host, argv, [] if default_all else ["--all"])
    rolling = command in ROLLING and not (command == "up" and args.dry_run)
    ok = (0, 3) if command == "wait" else (0,)
    serial = parse_serial(getattr(args, "serial", None)) if rolling else "100%"
    max_fail = parse_percent(getattr(args, "max_fail", None)) if rolling else 100
    if not rolling and (getattr(args, "serial", None) or getattr(args, "max_fail", None)):
        raise UsageError(f"--serial/--max-fail apply to {', '.join(ROLLING)}")
    results = controller.run(per_host, ok_codes=ok, serial=serial, max_fail=max_fail)
    lines: list[str] = []
    host_rows = []
    inst_rows = []
    code = EXIT_OK
    for host in per_host:
        res = results.get(host) or HostResult(host, "not attempted")
        detail = res.detail
        if res.rolled_back:
            detail = (detail + "; " if detail else "") + "rolled back: " + \
                ", ".join(res.rolled_back)
        lines.append(f"{host}: {res.outcome}" + (f" ({detail})" if detail and
                                                res.outcome != "done" else ""))
        host_rows.append({**res.to_json(), "detail": detail})
        result = res.result if isinstance(res.result, dict) else {}
        for r in result.get("results", []) + result.get("plan", []):
            inst_rows.append({**r, "host": host})
            lines.append(f"  {r['name']}  {r['action']}"
                         + (f": {r.get('detail') or r.get('reason')}"
                            if r.get("detail") or r.get("reason") else ""))
        for r in result.get("instances", []):  # wait
            inst_rows.append({**r, "host": host})
        if res.outcome == "unreachable":
            code = EXIT_UNREACHABLE
        elif res.outcome != "done" and code != EXIT_UNREACHABLE:
            code = EXIT_ERROR
        elif res.rc == EXIT_NOT_RUNNING and code == EXIT_OK:
            code = EXIT_NOT_RUNNING
    if controller._bundle is not None and controller._bundle.dirty:
        print(f"miredoctl: warning: the fleet folder has uncommitted edits; hosts got commit "
              f"{controller._bundle.commit}", file=sys.stderr)
    kept = [f"{r['host']}/{r['name']}" for r in inst_rows if r.get("action") == orphans_mod.KEPT]
    if kept:
        print(f"miredoctl: warning: {len(kept)} orphan(s) run but are not in the inventory: "
              f"{', '.join(kept)} (left running; `--remove-orphans` stops and removes them)",
              file=sys.stderr)
    _emit(args, {"commit": controller._bundle.commit if controller._bundle else None,
                 "hosts": host_rows, "results": inst_rows}, "\n".join(lines))
    return code
