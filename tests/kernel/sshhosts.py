"""Namespace "hosts" for the multi-host tests: each is a network namespace running a real sshd.

A host is what an operator's machine is to the controller: an address reached over SSH, its own
`/run` (so its supervisord, sockets and `/run/miredoctl` state are its own, as on a separate
machine), its own host key, pinned in a known_hosts file. What it shares with this machine is the
filesystem outside `/run` (so the same Python and teredo-fleet install are there).

Addresses: a veth pair per host, a /30 out of 192.0.2.0/24 (RFC 5737 TEST-NET-1), which the lab
(`teredolab.topology`: 203.0.113.0/24, 198.51.100.0/24, 198.18.0.0/15) does not use; blocks
already carried by an interface of this namespace are skipped, so concurrent runs do not clash.

Everything made here is torn down by `SshHosts.close()`: sshd and whatever the sessions left
running in the namespace (by PID, from `ip netns pids`), then the namespaces (which removes the
veths with them).
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
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
NET = ipaddress.ip_network("192.0.2.0/24")


def missing() -> str | None:
    """Why the multi-host tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "multi-host tests need root (namespaces, sshd)"
    for tool in (SSHD, "ssh", "ssh-keygen", "ip", "unshare"):
        if shutil.which(tool) is None and not Path(tool).exists():
            return f"multi-host tests need {tool} (apt-get install openssh-server)"
    try:
        import ansible  # noqa: F401
    except ImportError:
        return "multi-host tests need ansible-core (pip install -e '.[test]')"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def _used_blocks() -> set[int]:
    out = _run("ip", "-j", "-4", "addr", "show").stdout
    used = set()
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            ip = ipaddress.ip_address(a["local"])
            if ip in NET:
                used.add((int(ip) - int(NET.network_address)) // 4)
    return used


@dataclass
class Host:
    name: str
    netns: str
    veth: str
    address: str
    controller_address: str
    root: Path
    hide_users: frozenset[str] = frozenset()  # accounts this host's /etc/passwd lacks
    sshd: subprocess.Popen[bytes] | None = None
    host_key_pub: str = ""

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_key_pub}"

    def drop_sessions(self) -> int:
        """SIGKILL the sshd processes serving connections, not the listener: every SSH
        connection to this host drops at once, and new ones are accepted. Returns how many."""
        killed = 0
        for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
            try:
                if (int(pid) != (self.sshd.pid if self.sshd else -1)
                        and Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                pass
        return killed

    def kill_sshd(self) -> None:
        """SIGKILL this host's sshd and its session processes (which an SSH master connection
        would otherwise keep using): the host is gone as far as SSH can tell."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.send_signal(signal.SIGKILL)
            self.sshd.wait(timeout=10)
        for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass


@dataclass
class SshHosts:
    """N namespace hosts, a controller key and the known_hosts that pins their host keys."""

    base: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: list[Host] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.base / "controller" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.base / "controller" / "known_hosts"

    def make(self, count: int, hide_users: dict[int, set[str]] | None = None) -> list[Host]:
        """`hide_users`: {host index: accounts} missing from that host's /etc/passwd."""
        (self.base / "controller").mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.client_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "miredoctl-test",
                 "-f", str(self.client_key))
        free = [b for b in range(1, 64) if b not in _used_blocks()]
        for i in range(count):
            block = free[secrets.randbelow(len(free))]
            free.remove(block)
            first = int(NET.network_address) + 4 * block
            host = Host(name=f"host{len(self.hosts) + 1}", netns=f"rh{self.tag}-{i + 1}",
                        veth=f"rh{self.tag}v{i + 1}",
                        address=str(ipaddress.ip_address(first + 2)),
                        controller_address=str(ipaddress.ip_address(first + 1)),
                        root=self.base / f"host{len(self.hosts) + 1}",
                        hide_users=frozenset((hide_users or {}).get(i, ())))
            self.hosts.append(host)  # before building it: close() removes a half-built host
            self._build(host)
        self.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in self.hosts))
        return self.hosts[-count:]

    def _build(self, h: Host) -> None:
        h.root.mkdir(parents=True, mode=0o700)
        _run("ip", "netns", "add", h.netns)
        _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0",
             "netns", h.netns)
        _run("ip", "addr", "add", f"{h.controller_address}/30", "dev", h.veth)
        _run("ip", "link", "set", h.veth, "up")
        for argv in (("addr", "add", f"{h.address}/30", "dev", "eth0"),
                     ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
            _run("ip", "-n", h.netns, *argv)
        key = h.root / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(key))
        h.host_key_pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        shutil.copy(f"{self.client_key}.pub", h.root / "authorized_keys")
        conf = h.root / "sshd_config"
        conf.write_text("\n".join((
            f"ListenAddress {h.address}", "Port 22", f"HostKey {key}",
            f"PidFile {h.root / 'sshd.pid'}", f"AuthorizedKeysFile {h.root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            # the keys live under /tmp (world-writable): sshd's ownership walk would refuse them
            "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
            "MaxSessions 20", "MaxStartups 50", "")))
        # a private /run: sshd's privilege-separation directory /run/sshd, and the host's
        # /run/miredoctl state, belong to this host alone, as on a machine of its own
        script = "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && "
        if h.hide_users:  # a host that lacks an account the controller has
            passwd = h.root / "passwd"
            passwd.write_text("".join(
                line for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
                if line.split(":", 1)[0] not in h.hide_users))
            passwd.chmod(0o644)
            script += f"mount --bind {passwd} /etc/passwd && "
        script += f"exec {SSHD} -D -e -f {conf}"
        with open(h.root / "sshd.log", "ab") as log:
            h.sshd = subprocess.Popen(
                ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation",
                 "private", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if h.sshd.poll() is not None:
                raise RuntimeError(f"{h.name}: sshd exited: "
                                   f"{(h.root / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection((h.address, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{h.name}: sshd does not answer on {h.address}:22")
            time.sleep(0.05)

    def close(self) -> list[str]:
        """Remove every host; returns what could not be removed (empty when all went)."""
        errors: list[str] = []
        for h in reversed(self.hosts):
            h.kill_sshd()
            # what the sessions left running in the namespace (supervisord, engines): ours
            for _ in range(3):
                pids = _run("ip", "netns", "pids", h.netns, check=False).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
            r = _run("ip", "netns", "del", h.netns, check=False)
            if r.returncode and "No such file" not in r.stderr:
                errors.append(f"{h.netns}: {r.stderr.strip()}")
            if _run("ip", "link", "show", h.veth, check=False).returncode == 0:
                _run("ip", "link", "del", h.veth, check=False)
        return errors
