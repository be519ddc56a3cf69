"""The Teredo daemons of a benchmark run, started through the kernel-test harness.

`tests.kernel.harness` is the project's one definition of how each implementation runs in a
role (argv templates, per-instance pid file and status socket, configs written from the lab
spec, start/stop by PID in a session of its own); the benchmark uses it as is, so that "ours"
here is exactly what the kernel tests run. What the benchmark adds: its names for the two
implementations, and qualification timed from netlink address events instead of 5 ms
polling.
"""

from __future__ import annotations

import os
import select
import subprocess
import time

from teredolab.topology import NetnsLab
from tests.kernel import harness as h

IMPLS = ("miredo", "ours")


def implementation(name: str) -> h.Implementation:
    """"miredo" is Debian's build (the harness calls it "debian"), "ours" is the engine;
    "ours@DIR" is the engine of another checkout (a before/after comparison in one run: its
    bytecode is written like ours, `compile_engine`)."""
    if name == "miredo":
        return h.DEBIAN
    if name == "ours":
        return h.OURS
    if name.startswith("ours@") and os.path.isdir(os.path.join(name[5:], "engine")):
        # PYTHONSAFEPATH: `python -m` would put the benchmark's working directory (this
        # checkout) before PYTHONPATH, and both columns would run this checkout's engine
        return h.Implementation(name, h.OURS.commands,
                                {"PYTHONPATH": name[5:], "PYTHONSAFEPATH": "1"})
    raise ValueError(f"unknown implementation {name!r} (have {', '.join(IMPLS)})")


def announced_address(line: str, ifname: str) -> str | None:
    """The address if an `ip monitor address` line announces a global address on `ifname`."""
    fields = line.split()
    if (ifname in fields and "inet6" in fields and "global" in fields
            and not line.startswith("Deleted")):
        return fields[fields.index("inet6") + 1].split("/")[0]
    return None


class AddressWatch:
    """Times a client's qualification: launch -> global address on the Teredo interface.

    It listens to netlink address events (`ip monitor`) started BEFORE the launch, so the time
    is taken when the kernel announces the address rather than at the next poll. The pipe is
    read raw and split here: the link-local and the global address often arrive in one read,
    and a line left in a buffered reader would never wake `select` again.
    """

    def __init__(self, ns: str, ifname: str) -> None:
        self.ns, self.ifname = ns, ifname
        self.mon = subprocess.Popen(["ip", "-n", ns, "-6", "monitor", "address"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        self.buf = b""
        time.sleep(0.1)  # ip monitor has no readiness signal; let it subscribe

    def wait(self, t0: float, daemon: h.Daemon, timeout: float) -> tuple[float, str] | None:
        """(seconds since t0, address) when the address appears; None on timeout or exit."""
        assert self.mon.stdout is not None
        fd = self.mon.stdout.fileno()
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                t = time.monotonic() - t0
                if not chunk:
                    return None  # ip monitor died
                self.buf += chunk
                *lines, self.buf = self.buf.split(b"\n")
                for line in lines:
                    addr = announced_address(line.decode(errors="replace"), self.ifname)
                    if addr:
                        return t, addr
            elif not daemon.alive():
                return None
        return None

    def close(self) -> None:
        self.mon.terminate()
        try:
            self.mon.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.mon.kill()
            self.mon.wait()
        if self.mon.stdout is not None:
            self.mon.stdout.close()


def start_client_timed(stack: h.Stack, impl: h.Implementation, name: str,
                       timeout: float = 20.0, role: str = "cli") -> tuple[h.Daemon, float | None,
                                                                            str]:
    """Start a client; returns (daemon, seconds from launch to address, address).

    The seconds are None when the address is there but its event was missed (not timed).
    Raises HarnessError, naming the client and quoting its log, when it does not qualify.
    """
    lab: NetnsLab = stack.lab
    spec = lab.spec
    conf = h.write_client_conf(stack.run_dir / f"{name}.conf", spec)
    daemon = h.Daemon(lab, role, "client", conf, stack.run_dir, impl, name=name)
    watch = AddressWatch(lab.ns(role), spec.teredo_if)
    try:
        stack.daemons.append(daemon.start())
        got = watch.wait(daemon.started_at, daemon, timeout)
    finally:
        watch.close()
    if got is None:
        addr = h.teredo_address(lab, role, spec.teredo_if)  # in case the event was missed
        if addr is None or not daemon.alive():
            state = "exited" if not daemon.alive() else "still running"
            raise h.HarnessError(f"{impl.name} client {name} ({state}): no Teredo address on "
                                 f"{spec.teredo_if} within {timeout:g} s; log: "
                                 f"{daemon.log_tail() or '(empty)'}")
        return daemon, None, addr
    return daemon, got[0], got[1]


def stop(stack: h.Stack, daemon: h.Daemon) -> None:
    """Stop one daemon of the stack by PID and forget it (the rest stop with the stack)."""
    daemon.stop()
    if daemon in stack.daemons:
        stack.daemons.remove(daemon)
