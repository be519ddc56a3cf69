"""`config` and `diff` on a fleet across hosts: each host's agent answers for its own share.

Both are asked of the hosts rather than computed on the controller, because both depend on the
host: `config` renders with the host's own paths (state folder, sockets) and the commit the
hosts receive, and `diff` compares that commit's rendering with what the host's engines run
now, so it shows exactly what the next `up` would change there. Uncommitted edits of the
controller's tree are not shown (they are not shipped either; the command warns about them).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from miredoctl.errors import EXIT_ERROR, EXIT_OK
from miredoctl.remote.orchestrate import Controller, HostResult
from miredoctl.remote.schema import EXIT_UNREACHABLE


def _failures(results: dict[str, HostResult], hosts: list[str]) -> int:
    """Say on stderr which hosts gave no answer; the exit code they make."""
    code = EXIT_OK
    for host in hosts:
        res = results.get(host) or HostResult(host, "not attempted")
        if res.outcome == "done":
            continue
        print(f"miredoctl: {host}: {res.outcome}" + (f" ({res.detail})" if res.detail else ""),
              file=sys.stderr)
        code = EXIT_UNREACHABLE if res.outcome == "unreachable" else max(code, EXIT_ERROR)
    return code


def _warn_dirty(controller: Controller) -> None:
    b = controller._bundle
    if b is not None and b.dirty:
        print(f"miredoctl: warning: the fleet folder has uncommitted edits; shown is commit "
              f"{b.commit}, what the hosts get", file=sys.stderr)


def config(args: argparse.Namespace, controller: Controller,
           per_host: dict[str, list[str]]) -> int:
    results = controller.run(per_host, ok_codes=(0,))
    data: dict[str, Any] = {}
    chunks: list[str] = []
    for host in per_host:
        res = results.get(host)
        if res is None or res.outcome != "done" or not isinstance(res.result, dict):
            continue
        for name, entry in res.result.items():
            data[name] = {**entry, "host": host}
            if args.origin:
                values, origins = entry.get("values") or {}, entry.get("origins") or {}
                width = max((len(k) for k in values), default=0)
                chunks.append("\n".join([f"# {host}/{name}"] + [
                    f"{k.ljust(width)}  {json.dumps(v)}  ({origins.get(k, '?')})"
                    for k, v in values.items()]))
            elif "config" in entry:
                chunks.append(f"# ==> {host}/{name}\n{entry['config']}"
                              f"# command: {' '.join(entry.get('command') or [])}")
            else:
                chunks.append(f"# ==> {host}/{name}: disabled (enabled: false), nothing "
                              "rendered")
    code = _failures(results, list(per_host))
    _warn_dirty(controller)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif chunks:
        print("\n\n".join(chunks))
    return code


def diff(args: argparse.Namespace, controller: Controller,
         per_host: dict[str, list[str]]) -> int:
    """Per host: the unified diff of rendered vs running configs, then the plan of `up`."""
    results = controller.run(per_host, ok_codes=(0, 1))
    data: dict[str, Any] = {}
    parts: list[str] = []
    changes = False
    for host in per_host:
        res = results.get(host)
        if res is None or res.outcome != "done" or not isinstance(res.result, dict):
            continue
        text, plan = res.result.get("diff") or "", res.result.get("plan") or []
        data[host] = {"diff": text, "plan": plan}
        changes = changes or bool(text) or any(p.get("action") != "unchanged" for p in plan)
        parts.append(f"== {host}\n" + text + ("\n" if text and not text.endswith("\n") else "")
                     + "\n".join(f"{p['action']:9}  {p['name']}: {p.get('reason', '')}"
                                 for p in plan))
    code = _failures(results, list(per_host))
    _warn_dirty(controller)
    if args.json:
        print(json.dumps({"hosts": data}, indent=2, sort_keys=True, default=str))
    elif parts:
        print("\n".join(parts))
    if code == EXIT_OK and args.exit_code and changes:
        return EXIT_ERROR
    return code
