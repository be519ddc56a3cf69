"""Plain SSH to the hosts, for the two things ansible-playbook does badly: answering fast and
streaming.

ansible-playbook costs about a second per run before any host is contacted (its start-up,
inventory, plugins), which is most of a read-only command's time; and it returns a task's output
only when the task ends, so `logs -f` cannot go through it. For those (status, show, logs,
logs -f) the controller runs the very same agent over plain `ssh`, with the options ansible
would use from hosts.yaml (`ansible_host`, `ansible_port`, `ansible_user`,
`ansible_ssh_private_key_file`, `ansible_ssh_common_args`, `ansible_ssh_extra_args`), the same
pinned known_hosts and the same strictness, `sudo` for `become`, over one multiplexed
connection per host (ControlMaster, kept `MIREDOCTL_SSH_PERSIST`). Anything that changes a
host keeps going through ansible-core (rolling, become plugins, its error handling).

A host whose variables this cannot reproduce exactly (a Jinja template in a value, a password,
another connection plugin or become method) is reached through ansible-playbook as before;
`MIREDOCTL_REMOTE_VIA=ansible` sends every host there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miredoctl.remote.hosts import HostEntry

# variables whose meaning plain ssh + sudo cannot give: such a host goes through ansible
NEEDS_ANSIBLE = ("ansible_password", "ansible_ssh_pass", "ansible_become_password",
                 "ansible_become_pass", "ansible_become_exe", "ansible_become_flags",
                 "ansible_ssh_executable", "ansible_ssh_transfer_method")


@dataclass
class Target:
    """How to reach one host's agent over plain ssh."""

    host: str
    ssh: list[str]  # `ssh -o ... address`, without the remote command
    python: str
    root: str
    state: str
    become: bool

    def command(self, agent_args: list[str]) -> list[str]:
        """The full argv: ssh, then the agent's command line as one quoted remote command."""
        argv = [self.python, "-m", "miredoctl.remote.agent", "--host", self.host,
                "--root", self.root, "--state-dir", self.state, *agent_args]
        if self.become:
            argv = ["sudo", "-n", "-H", "-u", "root", "--", *argv]
        return [*self.ssh, shlex.join(argv)]


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def target(entry: HostEntry, ssh_options: list[str], control_dir: Path, *, root_default: str,
           state_default: str) -> Target | None:
    """The plain-ssh way to `entry`, or None when only ansible can reach it as configured."""
    v = entry.vars
    if os.environ.get("MIREDOCTL_REMOTE_VIA") == "ansible":
        return None
    if any(_templated(x) for x in v.values()) or any(k in v for k in NEEDS_ANSIBLE):
        return None
    if v.get("ansible_connection", "ssh") not in ("ssh", "smart"):
        return None
    if v.get("ansible_become_method", "sudo") != "sudo" or \
            v.get("ansible_become_user", "root") != "root":
        return None
    user = v.get("ansible_user", v.get("ansible_ssh_user"))
    port = v.get("ansible_port", v.get("ansible_ssh_port"))
    key = v.get("ansible_ssh_private_key_file")
    argv = ["ssh", *ssh_options, "-o", f"ControlPath={control_dir}/d-%C"]
    if key:
        argv += ["-o", f"IdentityFile={os.path.expanduser(str(key))}", "-o", "IdentitiesOnly=yes",
                 "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]
    if port:
        argv += ["-o", f"Port={int(port)}"]
    if user:
        argv += ["-o", f"User={user}"]
    for extra in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if v.get(extra):
            argv += shlex.split(str(v[extra]))
    argv += ["-T", "--", str(v.get("ansible_host") or entry.name)]
    root = str(v.get("miredoctl_root") or root_default)
    become = v.get("miredoctl_become")
    if become is None:
        become = str(user or "root") != "root"
    return Target(entry.name, argv,
                  python=str(v.get("miredoctl_python") or root.rstrip("/") + "/venv/bin/python"),
                  root=root, state=str(v.get("miredoctl_state") or state_default + entry.name),
                  become=bool(become))


def run_all(targets: dict[str, Target], agent_args: dict[str, list[str]], stdin: str,
            timeout: float = 600) -> dict[str, dict[str, Any]]:
    """The agent on every target at once; per host a result shaped like ansible's `command`
    task result (`stdout`, `stderr`, `rc`, or `unreachable` with ssh's complaint as `msg`),
    so the controller judges both paths alike."""
    def one(host: str) -> dict[str, Any]:
        try:
            proc = subprocess.run(targets[host].command(agent_args[host]), input=stdin,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"rc": None, "stdout": "", "stderr": f"no answer in {timeout:.0f} s"}
        except OSError as exc:
            return {"unreachable": True, "msg": f"ssh: {exc}"}
        if proc.returncode == 255 and '"schema"' not in proc.stdout:
            return {"unreachable": True, "msg": proc.stderr}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    hosts = list(targets)
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        return dict(zip(hosts, pool.map(one, hosts), strict=True))
