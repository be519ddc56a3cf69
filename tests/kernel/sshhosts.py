"""Namespace "hosts" for the multi-host tests: each is a network namespace made only to be a host,
running a real sshd (the building is teredolab/sshhost.py's, which `miredoctl lab up --hosts`
uses for the lab's own namespaces).

A host is what an operator's machine is to the controller: an address reached over SSH, its own
`/run` (so its supervisord, sockets and `/run/miredoctl` state are its own, as on a separate
machine), its own host key, pinned in a known_hosts file. What it shares with this machine is the
filesystem outside `/run` (so the same Python and teredo-fleet install are there).

Addresses: a veth pair per host, a /30 that no route or address of this namespace overlaps
(teredolab.sshhost.MGMT_NETS: 192.0.2.0/24 first, which the lab does not use); blocks already
in use here are skipped and the free ones drawn at random, so concurrent runs do not clash.

Everything made here is torn down by `SshHosts.close()`: sshd and whatever the sessions left
running in the namespace (by PID, from `ip netns pids`), then the namespaces (which removes the
veths with them).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from teredolab import sshhost
from teredolab.sshhost import NsHost as Host

__all__ = ["Host", "SshHosts", "missing"]


def missing() -> str | None:
    """Why the multi-host tests cannot run here, or None."""
    reason = sshhost.missing_tools()
    if reason:
        return reason.replace("namespace hosts need", "multi-host tests need")
    try:
        import ansible  # noqa: F401
    except ImportError:
        return "multi-host tests need ansible-core (pip install -e '.[test]')"
    return None


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
        sshhost.make_client_key(self.client_key, "miredoctl-test")
        for i, block in enumerate(sshhost.pick_blocks(count)):
            n = len(self.hosts) + 1
            host = sshhost.new_host(f"host{n}", f"rh{self.tag}-{n}", f"rh{self.tag}v{n}", block,
                                    self.base / f"host{n}",
                                    hide_users=(hide_users or {}).get(i, ()))
            self.hosts.append(host)  # before building it: close() removes a half-built host
            sshhost.build(host, self.client_key, create_netns=True)
        self.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in self.hosts))
        return self.hosts[-count:]

    def close(self) -> list[str]:
        """Remove every host; returns what could not be removed (empty when all went)."""
        errors: list[str] = []
        for h in reversed(self.hosts):
            errors += sshhost.stop(h, delete_netns=True)
        return errors
