"""The guided demo: the lab network, the default fleet under miredoctl, and pings through it.

Every step runs the same `miredoctl` command an operator would type (shown before it runs) and
then says what it proved. The fleet is left running so the user can look around; the last lines
say how to take everything down. Run from the repository root (the fleet is ./instances):
`miredoctl demo` (or `python -m teredolab demo`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from teredolab import netns
from teredolab.topology import DEFAULT_PREFIX, LabSpec

LAB_PREFIX = DEFAULT_PREFIX  # the prefix the default fleet in instances/ names
V6_HOST = LabSpec().v6_host


class DemoFailed(RuntimeError):
    """A demo step failed; the message names the command, and main() says how to clean up."""


def _say(text: str) -> None:
    print(text, flush=True)


def _miredoctl(*args: str, capture: bool = False, check: bool = True
               ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "miredoctl.cli", *args]
    if not capture:
        _say(f"\n$ miredoctl {shlex.join(args)}")
    proc = subprocess.run(cmd, text=True, capture_output=capture)
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip() if capture else ""
        raise DemoFailed(f"`miredoctl {shlex.join(args)}` exited {proc.returncode}"
                         + (f": {detail}" if detail else ""))
    return proc


def _ping(ns: str, target: str, what: str) -> None:
    _say(f"\n$ ip netns exec {ns} ping -c 3 {target}    # {what}")
    proc = subprocess.run(netns.exec_argv(ns, ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "3",
                                               target]), text=True, capture_output=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    for line in lines[-2:]:
        _say(f"  {line}")
    if proc.returncode != 0:
        raise DemoFailed(f"ping {target} from {ns} failed ({what})")


def run() -> int:
    if os.geteuid() != 0:
        _say("miredoctl demo: needs root (network namespaces, TUN devices)")
        return 1
    if not Path("instances").is_dir():
        _say("miredoctl demo: run it from the repository root (the fleet is ./instances)")
        return 1
    _say("== 1. The lab: a Teredo server, a relay, an IPv6-only host and two clients behind two "
         f"NATs, each in its own network namespace ({LAB_PREFIX}*). Nothing touches the host's "
         "network.")
    _miredoctl("down", capture=True, check=False)  # an earlier demo's fleet, if any
    _miredoctl("lab", "up", "--prefix", LAB_PREFIX)
    _say("   -> namespaces, links, NATs built; plain IPv4/IPv6 reachability checked.")

    _say("\n== 2. The inventory in instances/ (one YAML file per instance + defaults.yaml)")
    _miredoctl("validate")
    _say("   -> every file is valid, and each rendered config is accepted by miredo-checkconf "
         "and by teredo-engine --check.")

    _say("\n== 3. Start the fleet: one supervisord for this fleet, one engine per instance")
    _miredoctl("up", "--all")
    started = time.monotonic()
    _miredoctl("wait", "--timeout", "30")
    _say(f"   -> all engines RUNNING under supervisord; both clients qualified with the server "
         f"(within {time.monotonic() - started:.1f} s of `wait`).")

    _say("\n== 4. What the fleet looks like")
    _miredoctl("status")
    rows = json.loads(_miredoctl("status", "--json", capture=True).stdout)["instances"]
    addr = {r["name"]: r.get("address") for r in rows}
    _say("   -> each client has a Teredo address 2001:0:cb00:710a:... (server 203.0.113.10) "
         "that encodes its NAT's public address and port (MAPPED).")

    _say("\n== 5. Traffic through the tunnels")
    _ping(f"{LAB_PREFIX}cli", V6_HOST,
          "client1 -> native IPv6 host: Teredo client -> relay -> IPv6 internet")
    _ping(f"{LAB_PREFIX}v6", addr["client2"] or "",
          "native IPv6 host -> client2: relay -> NAT #2 -> client (hole punched via the server)")
    _ping(f"{LAB_PREFIX}cli", addr["client2"] or "",
          "client1 -> client2: client to client, directly between the two NATs")
    _say("   -> all three paths work: the relay, the server's hole punching and direct "
         "client-to-client tunnels.")

    _say("\n== Look around")
    for cmd, what in (
        ("miredoctl status", "one line per instance"),
        ("miredoctl show client1", "everything about one instance (like `wg show`)"),
        ("miredoctl logs -f", "all engine logs, merged"),
        ("miredoctl config --origin relay", "which file and line set each value"),
        ("miredoctl reload relay", "re-render and SIGHUP one engine"),
        ("miredoctl metrics", "every instance for Prometheus (docs/metrics.md)"),
        (f"ip netns exec {LAB_PREFIX}cli ping {V6_HOST}", "use the tunnel yourself"),
    ):
        _say(f"  {cmd:45} # {what}")
    _say("\n== Take it all down")
    _say("  miredoctl down && miredoctl lab down")
    return 0


def main() -> int:
    try:
        return run()
    except (DemoFailed, subprocess.TimeoutExpired) as exc:
        _say(f"\nmiredoctl demo: FAILED: {exc}")
        _say("  see `miredoctl status` and `miredoctl logs`; clean up with "
             "`miredoctl down && miredoctl lab down`")
        return 1


if __name__ == "__main__":
    sys.exit(main())
