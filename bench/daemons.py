"""The Teredo daemons of a benchmark run: which implementation runs a role, and how to start it.

Both implementations read the same miredo-format config files and take the same flags
(`-f -c CONF -p PIDFILE`), so a role differs only in its argv. Each instance gets its own pid
file: the default /var/run/miredo.pid is shared by every namespace and a second instance would
refuse to start. Debian's miredo is never started without `-c` (its default config points at a
server on the internet).
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.plan import PLAN, AddressPlan
from bench.procs import Proc, ProcessGroup, wait_until

IMPLS = ("miredo", "ours")
MIREDO_USER = "miredo"
MIREDO_SERVER_USER = "miredo-server"


class DaemonError(RuntimeError):
    """A daemon did not come up (the message names the role and quotes its log)."""


def relay_conf(plan: AddressPlan = PLAN) -> str:
    return (
        "# benchmark relay (miredo.conf format)\n"
        "RelayType cone\n"
        f"InterfaceName {plan.teredo_if}\n"
        f"Prefix {plan.teredo_prefix}\n"
        f"BindAddress {plan.rly_ip4}\n"
        f"BindPort {plan.rly_port}\n"
    )


def client_conf(plan: AddressPlan = PLAN) -> str:
    return (
        "# benchmark client (miredo.conf format)\n"
        "RelayType client\n"
        f"InterfaceName {plan.teredo_if}\n"
        f"ServerAddress {plan.srv_ip1}\n"
        f"ServerAddress2 {plan.srv_ip2}\n"
    )


def server_conf(plan: AddressPlan = PLAN) -> str:
    return (
        "# benchmark server (miredo-server.conf format)\n"
        f"ServerBindAddress {plan.srv_ip1}\n"
        f"ServerBindAddress2 {plan.srv_ip2}\n"
        f"Prefix {plan.teredo_prefix}\n"
    )


CONFS = {"relay": relay_conf, "client": client_conf, "server": server_conf}


def command(impl: str, role: str, conf: Path, pidfile: Path,
            profile_out: Path | None = None) -> list[str]:
    """argv of one daemon; `profile_out` runs ours under cProfile (stats written at exit)."""
    if impl == "miredo":
        if role == "server":
            return ["miredo-server", "-f", "-c", str(conf), "-p", str(pidfile),
                    "-u", MIREDO_SERVER_USER]
        return ["miredo", "-f", "-c", str(conf), "-p", str(pidfile), "-u", MIREDO_USER]
    if impl == "ours":
        prof = ["-m", "cProfile", "-o", str(profile_out)] if profile_out else []
        return [sys.executable, *prof, "-m", "engine", "-f", "-c", str(conf), "-p", str(pidfile)]
    raise ValueError(f"unknown implementation {impl!r} (have {', '.join(IMPLS)})")


@dataclass
class Launcher:
    """Writes configs into the run directory and starts daemons in their namespaces."""

    group: ProcessGroup
    run_dir: Path
    plan: AddressPlan = PLAN

    def start(self, impl: str, role: str, ns: str, name: str,
              profile_out: Path | None = None) -> Proc:
        conf = self.run_dir / f"{name}.conf"
        conf.write_text(CONFS[role](self.plan))
        pidfile = self.run_dir / f"{name}.pid"
        pidfile.unlink(missing_ok=True)
        return self.group.start(name, ns, command(impl, role, conf, pidfile, profile_out))


def _ns_out(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                          text=True, check=False).stdout


def udp_bound(ns: str, addr: str, port: int) -> bool:
    return bool(_ns_out(ns, "ss", "-Hlun", f"src {addr}:{port}").strip())


def link_exists(ns: str, ifname: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", "dev", ifname],
                          capture_output=True, check=False).returncode == 0


def teredo_address(ns: str, ifname: str) -> str | None:
    out = subprocess.run(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", ifname,
                          "scope", "global"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet6" in fields:
            return fields[fields.index("inet6") + 1].split("/")[0]
    return None


def _fail(proc: Proc, role: str, what: str) -> DaemonError:
    state = "exited" if not proc.alive() else "still running"
    return DaemonError(f"{role} {proc.name} ({state}): {what}; log: {proc.tail() or '(empty)'}")


def wait_server(proc: Proc, ns: str, plan: AddressPlan = PLAN, timeout: float = 5) -> None:
    for addr in (plan.srv_ip1, plan.srv_ip2):
        if wait_until(lambda a=addr: udp_bound(ns, a, 3544) or not proc.alive(),
                      timeout, 0.05) is None or not proc.alive():
            raise _fail(proc, "server", f"did not bind {addr}:3544 within {timeout} s")


def wait_relay(proc: Proc, ns: str, plan: AddressPlan = PLAN, timeout: float = 10) -> None:
    ok = wait_until(lambda: not proc.alive() or (link_exists(ns, plan.teredo_if)
                    and udp_bound(ns, plan.rly_ip4, plan.rly_port)), timeout, 0.05)
    if ok is None or not proc.alive():
        raise _fail(proc, "relay", f"no {plan.teredo_if} interface with UDP "
                    f"{plan.rly_ip4}:{plan.rly_port} bound within {timeout} s")


class AddressWatch:
    """Times a client's qualification: launch -> global address on the Teredo interface.

    It listens to netlink address events (`ip monitor`) started BEFORE the launch, so the time
    is taken when the kernel announces the address rather than at the next poll.
    """

    def __init__(self, ns: str, ifname: str) -> None:
        self.ns, self.ifname = ns, ifname
        self.mon = subprocess.Popen(["ip", "-n", ns, "-6", "monitor", "address"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, bufsize=1, start_new_session=True)
        time.sleep(0.1)  # ip monitor has no readiness signal; let it subscribe

    def wait(self, t0: float, proc: Proc, timeout: float) -> tuple[float, str] | None:
        """(seconds since t0, address) when the address appears; None on timeout/exit."""
        assert self.mon.stdout is not None
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([self.mon.stdout], [], [], 0.2)
            if ready:
                line = self.mon.stdout.readline()
                fields = line.split()
                if (f" {self.ifname} " in f" {line} " and "inet6" in fields
                        and "global" in fields and not line.startswith("Deleted")):
                    t = time.monotonic() - t0
                    return t, fields[fields.index("inet6") + 1].split("/")[0]
            elif not proc.alive():
                return None
        return None

    def close(self) -> None:
        self.mon.terminate()
        try:
            self.mon.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.mon.kill()
            self.mon.wait()


def start_client_timed(launcher: Launcher, impl: str, ns: str, name: str,
                       timeout: float = 20) -> tuple[Proc, float | None, str]:
    """Start a client and wait for its Teredo address; returns (proc, seconds, address).

    The seconds are None when the address is there but its event was missed (not timed).
    """
    plan = launcher.plan
    watch = AddressWatch(ns, plan.teredo_if)
    try:
        t0 = time.monotonic()
        proc = launcher.start(impl, "client", ns, name)
        got = watch.wait(t0, proc, timeout)
    finally:
        watch.close()
    if got is None:
        addr = teredo_address(ns, plan.teredo_if)  # in case the event was missed
        if addr is None or not proc.alive():
            raise _fail(proc, "client", f"no Teredo address on {plan.teredo_if} "
                        f"within {timeout} s")
        return proc, None, addr
    return proc, got[0], got[1]
