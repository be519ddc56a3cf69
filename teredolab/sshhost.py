"""Namespace "hosts": a network namespace that runs a real OpenSSH sshd, with a /run of its own.

A host is what an operator's machine is to a fleet's controller: an address reached over SSH,
its own `/run` (so its supervisord, sockets and `/run/miredoctl` state are its own, as on a
separate machine), its own host key, pinned in a known_hosts file. What it shares with this
machine is the filesystem outside `/run` (so the same Python and teredo-fleet install are
there) and `/proc` (so state folders must have names of their own per host).

Used by `miredoctl lab up --hosts` (teredolab/labhosts.py: the lab's own namespaces become
hosts) and by the multi-host tests and benchmark (tests/kernel/sshhosts.py: namespaces made
only to be hosts).

The management link: a veth pair per host, one end in this (the controller's) namespace, the
other in the host's, a /30 out of `MGMT_NETS`: RFC 5737 TEST-NET-1 first, which the lab's
address plan (203.0.113.0/24, 198.51.100.0/24, 198.18.0.0/24, 198.19.0.0/24) leaves free,
then the top of 198.18.0.0/15 (RFC 2544). A /30 is taken only where no route or address of
this namespace overlaps it (the machine's own LAN or a proxy may sit in these ranges too: a
/30 inside them would shadow part of it), nor any network the caller names; among the free
blocks one is drawn at random, so runs that build hosts at the same moment do not clash.
The link carries IPv4 only, and nothing routes between hosts: each reaches the controller and
nothing else over it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from teredolab.netns import alive

SSHD = "/usr/sbin/sshd"
MGMT_NETS = tuple(ipaddress.IPv4Network(n) for n in
                  ("192.0.2.0/24", "198.19.255.0/24", "198.18.255.0/24"))
TOOLS = (SSHD, "ssh", "ssh-keygen", "ip", "unshare", "sysctl")


class HostError(RuntimeError):
    """Building a namespace host failed; `str()` is one line naming the host and the step."""


def missing_tools() -> str | None:
    """Why namespace hosts cannot be built here, or None."""
    if os.geteuid() != 0:
        return "namespace hosts need root (namespaces, veths, sshd)"
    for tool in TOOLS:
        if shutil.which(tool) is None and not Path(tool).exists():
            return f"namespace hosts need {tool} (apt-get install openssh-server openssh-client)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and cp.returncode != 0:
        err = (cp.stderr.strip() or cp.stdout.strip() or f"exit {cp.returncode}").splitlines()
        raise HostError(f"{' '.join(argv)}: {err[0]}")
    return cp


def _taken() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this namespace routes or holds an address in (default route aside)."""
    nets: list[ipaddress.IPv4Network] = []
    for link in json.loads(_run("ip", "-j", "-4", "addr", "show").stdout or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout
                            or "[]"):
        dst = route.get("dst", "default")
        if dst == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen:
            nets.append(net)
    return nets


def free_blocks(avoid: Iterable[ipaddress.IPv4Network] = ()) -> list[ipaddress.IPv4Network]:
    """The /30s of the first of `MGMT_NETS` that has any free, free of this namespace's routes
    and addresses and of `avoid` (each block's first address is never used: blocks start at
    .4, so .0-.3 of each range stay out)."""
    taken = [*_taken(), *avoid]
    for net in MGMT_NETS:
        free = [b for b in list(net.subnets(new_prefix=30))[1:]
                if not any(b.overlaps(t) for t in taken)]
        if free:
            return free
    raise HostError("no free /30 for a management link in "
                    + ", ".join(map(str, MGMT_NETS)) + " (all routed or in use here)")


def pick_blocks(count: int, avoid: Iterable[ipaddress.IPv4Network] = ()
                ) -> list[ipaddress.IPv4Network]:
    free = free_blocks(avoid)
    if len(free) < count:
        raise HostError(f"only {len(free)} free /30s for management links, {count} wanted")
    chosen = []
    for _ in range(count):
        chosen.append(free.pop(secrets.randbelow(len(free))))
    return chosen


def make_client_key(path: Path, comment: str) -> Path:
    """The controller's SSH key (ed25519, no passphrase), made once; returns the private key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path


def links() -> set[str]:
    """The names of this namespace's network interfaces."""
    return {link["ifname"] for link in json.loads(_run("ip", "-j", "link", "show").stdout
                                                   or "[]")}


def _ns_pids(netns: str) -> list[int]:
    out = _run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class NsHost:
    """One namespace host: `veth` is the link's end in the controller's namespace, `ifname`
    the end in the host's; `root` holds its sshd's config, host key and log."""

    name: str
    netns: str
    veth: str
    address: str
    controller_address: str
    root: Path
    ifname: str = "eth0"
    hide_users: frozenset[str] = frozenset()  # accounts this host's /etc/passwd lacks
    sshd: subprocess.Popen[bytes] | None = None
    host_key_pub: str = ""

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_key_pub}"

    @property
    def pidfile(self) -> Path:
        return self.root / "sshd.pid"

    def sshd_pid(self) -> int | None:
        """The listening sshd's PID while it runs in this host's namespace, else None."""
        pid = self.sshd.pid if self.sshd is not None else None
        if pid is None:
            try:
                pid = int(self.pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
        if _comm(pid) == "sshd" and pid in _ns_pids(self.netns):
            return pid
        return None

    def drop_sessions(self) -> int:
        """SIGKILL the sshd processes serving connections, not the listener: every SSH
        connection to this host drops at once, and new ones are accepted. Returns how many."""
        killed = 0
        listener = self.sshd_pid()
        for pid in _ns_pids(self.netns):
            if pid != listener and _comm(pid) == "sshd":
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        return killed

    def kill_sshd(self) -> None:
        """SIGKILL this host's sshd and its session processes (which an SSH master connection
        would otherwise keep using): the host is gone as far as SSH can tell."""
        listener = self.sshd_pid()
        if listener is not None:
            os.kill(listener, signal.SIGKILL)
        if self.sshd is not None:
            self.sshd.wait(timeout=10)
        for pid in _ns_pids(self.netns):
            if _comm(pid) == "sshd":
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "netns": self.netns, "veth": self.veth,
                "ifname": self.ifname, "address": self.address,
                "controller_address": self.controller_address, "root": str(self.root),
                "sshd_pid": self.sshd_pid(), "host_key": self.host_key_pub}


def new_host(name: str, netns: str, veth: str, block: ipaddress.IPv4Network, root: Path,
             ifname: str = "eth0", hide_users: Iterable[str] = ()) -> NsHost:
    """A host on the /30 `block`: the controller takes its first usable address, the host the
    second."""
    first = int(block.network_address)
    return NsHost(name=name, netns=netns, veth=veth, ifname=ifname,
                  address=str(ipaddress.ip_address(first + 2)),
                  controller_address=str(ipaddress.ip_address(first + 1)),
                  root=root, hide_users=frozenset(hide_users))


def build(h: NsHost, authorized_key: Path, *, create_netns: bool) -> None:
    """Make `h`: its namespace (or use an existing one), the management link, a host key, an
    sshd that lets `authorized_key` in as root, running with a private /run. Returns once sshd
    answers on port 22; raises HostError naming the step otherwise."""
    h.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if create_netns:
        _run("ip", "netns", "add", h.netns)
        _run("ip", "-n", h.netns, "link", "set", "lo", "up")
    _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", h.ifname,
         "netns", h.netns)
    # IPv4 only on the link: no link-local addresses, router or neighbour discovery on it
    _run("sysctl", "-qw", f"net.ipv6.conf.{h.veth}.disable_ipv6=1")
    _run("ip", "netns", "exec", h.netns, "sysctl", "-qw",
         f"net.ipv6.conf.{h.ifname}.disable_ipv6=1")
    _run("ip", "addr", "add", f"{h.controller_address}/30", "dev", h.veth)
    _run("ip", "link", "set", h.veth, "up")
    _run("ip", "-n", h.netns, "addr", "add", f"{h.address}/30", "dev", h.ifname)
    _run("ip", "-n", h.netns, "link", "set", h.ifname, "up")
    key = h.root / "ssh_host_ed25519_key"
    if key.exists():  # a host rebuilt into an old folder gets a new key
        key.unlink()
        Path(f"{key}.pub").unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(key))
    h.host_key_pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    shutil.copy(f"{authorized_key}.pub", h.root / "authorized_keys")
    conf = h.root / "sshd_config"
    conf.write_text("\n".join((
        f"ListenAddress {h.address}", "Port 22", f"HostKey {key}",
        f"PidFile {h.pidfile}", f"AuthorizedKeysFile {h.root / 'authorized_keys'}",
        "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        # the tests keep the keys under /tmp (world-writable): sshd's ownership walk would
        # refuse them
        "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
        "MaxSessions 20", "MaxStartups 50", "")))
    # a private /run: sshd's privilege-separation directory /run/sshd, and the host's
    # /run/miredoctl state, belong to this host alone, as on a machine of its own. (So nothing
    # the host needs may live under this machine's /run: it is hidden there.)
    script = "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && "
    if h.hide_users:  # a host that lacks an account the controller has
        passwd = h.root / "passwd"
        passwd.write_text("".join(
            line for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
            if line.split(":", 1)[0] not in h.hide_users))
        passwd.chmod(0o644)
        script += f"mount --bind {passwd} /etc/passwd && "
    script += f"exec {SSHD} -D -e -f {conf}"
    log_path = h.root / "sshd.log"
    with open(log_path, "ab") as log:
        # `ip netns exec`, `unshare` (no --fork) and `sh -c 'exec ...'` all exec: the PID
        # is sshd's own, and SIGTERM to it stops it
        h.sshd = subprocess.Popen(
            ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation",
             "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 15
    while True:
        if h.sshd.poll() is not None:
            raise HostError(f"{h.name}: sshd exited: {log_path.read_text()[-500:].strip()}")
        try:
            with socket.create_connection((h.address, 22), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HostError(f"{h.name}: sshd does not answer on {h.address}:22")
        time.sleep(0.05)


def stop(h: NsHost, *, delete_netns: bool, grace: float = 3.0) -> list[str]:
    """Remove what `build` made: sshd (by PID), then, with `delete_netns`, everything the
    sessions left running in the namespace (by PID) and the namespace; the management link in
    any case. Returns what could not be removed (empty when all went)."""
    errors: list[str] = []
    pid = h.sshd_pid()
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if h.sshd is not None:
        try:
            h.sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            errors.append(f"{h.name}: sshd {h.sshd.pid} did not stop")
    if delete_netns and Path("/run/netns", h.netns).exists():
        # what the sessions left running in the namespace (supervisord, engines): ours
        for _ in range(3):
            pids = _ns_pids(h.netns)
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        r = _run("ip", "netns", "del", h.netns, check=False)
        if r.returncode and "No such file" not in r.stderr:
            errors.append(f"{h.netns}: {r.stderr.strip()}")
    if _run("ip", "link", "show", h.veth, check=False).returncode == 0:
        r = _run("ip", "link", "del", h.veth, check=False)
        if r.returncode and "Cannot find" not in r.stderr:
            errors.append(f"{h.veth}: {r.stderr.strip()}")
    return errors
