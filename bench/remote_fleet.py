"""Timings of a fleet across hosts (issue 11's numbers; a benchmark, not a test).

`python -m bench.remote_fleet [--hosts 3] [--per-host 10]` (root; needs openssh-server and
ansible-core): builds namespace hosts with a real sshd each (tests/kernel/sshhosts.py), a fleet of
relays spread over them, and times `status` cold (no SSH connection yet) and warm (SSH
connections reused; over plain ssh, and forced through ansible-playbook with
MIREDOCTL_REMOTE_VIA=ansible), a no-op `up`, `up` after one instance changed, and a rolling
`reload --all`. Each line also gives the slowest host's agent time (the part spent on the host
itself; the rest is ansible-playbook and SSH).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.kernel.sshhosts import SshHosts, missing

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--per-host", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    reason = missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="mdr-bench-"))
    ssh = SshHosts(base / "h")
    fleet, state = base / "fleet", base / "st"
    mc = [sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet), "--state-dir", str(state)]

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[float, float | None, int]:
        t = time.monotonic()
        r = subprocess.run([*mc, *args, "--json"], capture_output=True, text=True,
                           env=dict(os.environ, **(env or {})))
        wall = time.monotonic() - t
        try:
            agent = max((h.get("agent_seconds") or 0) for h in json.loads(r.stdout)["hosts"])
        except (ValueError, KeyError):
            agent = None
        return wall, agent, r.returncode

    def commit(msg: str) -> None:
        subprocess.run(["git", "add", "-A"], cwd=fleet, check=True)
        subprocess.run(["git", "commit", "-qm", msg], cwd=fleet, check=True,
                       env=dict(os.environ, **GIT_ENV))

    def close_masters() -> None:
        for sock in (state / "ssh").glob("*") if (state / "ssh").is_dir() else ():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                           capture_output=True)

    def bare_ansible(hosts: list) -> tuple[float, None, int]:
        """What ansible-playbook and SSH cost without the agent: the floor of any command."""
        from miredoctl.remote.hosts import load_checked
        from miredoctl.remote.orchestrate import Controller, ansible_playbook
        ctl = Controller(fleet, state, load_checked(fleet))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "play.yml").write_text(
                "- hosts: all\n  gather_facts: false\n  tasks:\n"
                "    - ansible.builtin.command: /bin/true\n")
            t = time.monotonic()
            r = subprocess.run([ansible_playbook(), "-i", str(fleet / "hosts.yaml"),
                                str(work / "play.yml")], capture_output=True, text=True,
                               env=ctl._env(work))
            return time.monotonic() - t, None, r.returncode

    rows: list[tuple[str, float, float | None, int]] = []
    try:
        hosts = ssh.make(opts.hosts)
        fleet.mkdir()
        subprocess.run(["git", "init", "-q", str(fleet)], check=True)
        lines = ["all:", "  vars:", "    ansible_user: root",
                 f"    ansible_ssh_private_key_file: {ssh.client_key}",
                 "    ansible_python_interpreter: /usr/bin/python3",
                 f"    miredoctl_python: {sys.executable}", "  hosts:"]
        for h in hosts:
            lines += [f"    {h.name}:", f"      ansible_host: {h.address}",
                      f"      miredoctl_root: {h.root}/agent",
                      f"      miredoctl_state: /run/miredoctl/{ssh.tag}-{h.name}"]
            for i in range(opts.per_host):
                (fleet / f"{h.name}-r{i}.yaml").write_text(
                    f"role: relay\nhost: {h.name}\ninterface: tr{i}\n")
        (fleet / "hosts.yaml").write_text("\n".join(lines) + "\n")
        (fleet / "known_hosts").write_text(ssh.known_hosts.read_text())
        (fleet / "defaults.yaml").write_text("allow_documentation_addresses: true\n")
        commit("bench fleet")
        rows.append(("up (first)", *run("up")))
        rows.append(("ansible alone: one /bin/true per host, warm", *bare_ansible(hosts)))
        rows.append(("status cold", *(close_masters() or run("status"))))
        for i in range(opts.repeat):
            rows.append((f"status warm #{i + 1}", *run("status")))
        via = {"MIREDOCTL_REMOTE_VIA": "ansible"}
        for i in range(opts.repeat):
            rows.append((f"status warm, via ansible-playbook #{i + 1}", *run("status", env=via)))
        rows.append(("logs -n 50 warm", *run("logs", "-n", "50")))
        for i in range(opts.repeat):
            rows.append((f"up no-op #{i + 1}", *run("up")))
        (fleet / "host2-r0.yaml").write_text("role: relay\nhost: host2\ninterface: tr0\n"
                                             "mtu: 1400\n")
        commit("one instance changed")
        rows.append(("up, one instance changed", *run("up")))
        rows.append(("reload --all (rolling, 1 host at a time)", *run("reload", "--all")))
        rows.append(("down", *run("down")))
    finally:
        close_masters()
        ssh.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
    print(f"{opts.hosts} hosts x {opts.per_host} relays")
    print(f"{'what':45} {'wall s':>7} {'agent s':>8} rc")
    for what, wall, agent, rc in rows:
        print(f"{what:45} {wall:7.2f} {agent if agent is not None else float('nan'):8.2f} {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
