"""`python -m teredolab lab up|down|status|check [--prefix P] [--json] [--hosts]` and `... demo`.

This is what `miredoctl lab` and `miredoctl demo` run (the manager execs it rather than importing
the lab), so it takes the same arguments, prints the same lines and returns the same exit codes,
and it speaks as `miredoctl`: to the operator these are miredoctl's commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from miredoctl.errors import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from teredolab import demo, labhosts
from teredolab.topology import DEFAULT_PREFIX, LabError, LabSpec, NetnsLab

PROG = "miredoctl"
PREFIX_ENV = "MIREDOCTL_LAB_PREFIX"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="the lab network and the demo")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("lab", help="build, remove or inspect the demo network in namespaces")
    p.add_argument("action", choices=("up", "down", "status", "check"))
    p.add_argument("--prefix", default=os.environ.get(PREFIX_ENV, DEFAULT_PREFIX),
                   help=f"namespace name prefix (default {DEFAULT_PREFIX}, env {PREFIX_ENV})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hosts", action="store_true",
                   help="up: also make the server, relay and client namespaces hosts (an sshd "
                        "each) and write a fleet across them (docs/miredoctl.md)")
    sub.add_parser("demo", help="build the lab, run the default fleet, ping through it "
                                "(from the repo root)")
    return parser


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text:
        print(text)


def lab_command(action: str, prefix: str, as_json: bool, hosts: bool = False) -> int:
    """One `lab` action; raises LabError with a one-line message when a step fails."""
    lab = NetnsLab(LabSpec(prefix=prefix))
    if hosts and action != "up":
        raise LabError(f"--hosts goes with `lab up` (`lab {action}` covers the hosts anyway)")
    if action == "up":
        lab.up(hosts=hosts)
        info = lab.status()
        names = ", ".join(r["namespace"] for r in info["roles"].values())
        text = f"lab {prefix} is up: {names} (plain IPv4/IPv6 checks passed)"
        if info["hosts"]:
            text += "\n" + labhosts.usage(prefix, info["hosts"], lab.spec)
        _emit(as_json, info, text)
    elif action == "down":
        stopped = lab.down()
        _emit(as_json, {"prefix": prefix, "stopped_pids": stopped},
              f"lab {prefix} removed" + (f" (stopped leftover pids "
                                         f"{', '.join(map(str, stopped))})" if stopped else ""))
    elif action == "status":
        info = lab.status()
        lines = [f"lab {prefix}: {'up' if info['up'] else 'down'}"]
        for role, entry in info["roles"].items():
            addrs = [a for iface in (entry.get("interfaces") or {}).values()
                     for a in iface.get("addresses", [])]
            lines.append(f"  {role:5} {entry['namespace']:12} "
                         f"{'exists' if entry['exists'] else 'missing':8} "
                         f"{' '.join(addrs)}")
        if info["hosts"]:
            lines.append(f"hosts (fleet {info['hosts']['fleet']}):")
            for entry in info["hosts"]["hosts"].values():
                sshd = entry["sshd_pid"]
                lines.append(f"  {entry['name']:<12} {entry['address']:<15} "
                             + (f"sshd pid {sshd}" if sshd else "sshd NOT running"))
        _emit(as_json, info, "\n".join(lines))
        return EXIT_OK if info["up"] else EXIT_NOT_RUNNING
    else:
        results = lab.check(raise_on_failure=False)
        _emit(as_json, [vars(r) for r in results],
              "\n".join(f"{'ok  ' if r.ok else 'FAIL'} {r.description}" for r in results))
        return EXIT_OK if all(r.ok for r in results) else EXIT_ERROR
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo.main()
    if os.geteuid() != 0:
        print(f"{PROG}: `miredoctl lab` needs root (network namespaces, veths, nftables)",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        return lab_command(args.action, args.prefix, args.json, args.hosts)
    except LabError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
