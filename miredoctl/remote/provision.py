"""Getting a host to run the controller's own teredo-fleet: `hosts bootstrap`, and the upgrade
of a host whose agent reports another version.

Both run `hostsetup.py` on the host (under its system Python, it needs no teredo-fleet there)
through one generated playbook, after copying the controller's wheelhouse (`wheelhouse.py`) to
`<miredoctl_root>/wheels/`. miredoctl installs only into its own venv, `<miredoctl_root>/venv`
(the default `miredoctl_python`, or any `miredoctl_python` under `miredoctl_root`): a Python the
operator named elsewhere is theirs, and a host running another teredo-fleet there is refused
with a message saying what to install, never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miredoctl.errors import MiredoctlError, one_line
from miredoctl.remote import hostsetup, schema, wheelhouse
from miredoctl.remote.orchestrate import DEFAULT_ROOT, DEFAULT_STATE, Controller, _ssh_error

# what a Debian host needs for the agent and the engines (docs/miredoctl.md, "A fleet across
# hosts"); `miredoctl_packages` in hosts.yaml replaces the list
DEFAULT_PACKAGES = ("python3", "python3-venv", "iproute2", "miredo")

PLAY = """\
- name: miredoctl host setup
  hosts: all
  gather_facts: false
  vars:
    root: "{{ miredoctl_root | default('%(root)s') }}"
    wheels: "{{ root ~ '/wheels/' ~ miredoctl_identity ~ '.tar' }}"
    sudo: "{{ miredoctl_become | default((ansible_user | default('root')) != 'root') }}"
  tasks:
    - name: wheels folder
      when: miredoctl_wheels_tar != ''
      become: "{{ sudo }}"
      ansible.builtin.file: {path: "{{ root }}/wheels", state: directory, mode: "0700"}
    - name: wheels
      when: miredoctl_wheels_tar != ''
      become: "{{ sudo }}"
      ansible.builtin.copy: {src: "{{ miredoctl_wheels_tar }}", dest: "{{ wheels }}",
                             mode: "0600"}
    - name: setup
      become: "{{ sudo }}"
      ansible.builtin.command:
        argv: "{{ [miredoctl_base_python | default('/usr/bin/python3'), '-', '--root', root,
                   '--python', miredoctl_python | default(root ~ '/venv/bin/python'),
                   '--state-dir', miredoctl_state | default('%(state)s' ~ inventory_hostname),
                   '--identity', miredoctl_identity, '--install', miredoctl_install,
                   '--wheels', wheels if miredoctl_wheels_tar != '' else root ~ '/wheels/none',
                   '--packages', (miredoctl_packages | default(miredoctl_default_packages))
                   | join(',') if miredoctl_do_packages else ''] }}"
        stdin: "{{ miredoctl_hostsetup }}"
      register: setup
      changed_when: false
      failed_when: false
"""


@dataclass
class SetupResult:
    host: str
    outcome: str  # changed, unchanged, failed, unreachable, not attempted
    steps: list[str] = field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "outcome": self.outcome, "steps": self.steps,
                "detail": self.detail}


def managed_python(controller: Controller, host: str) -> str | None:
    """Why miredoctl must not install into this host's Python, or None when it may (its own
    venv under miredoctl_root; hosts.yaml values with templates are Ansible's to resolve, so
    the host-side check in hostsetup.py decides then)."""
    hv = controller.hosts.hosts[host].vars
    if hv.get("miredoctl_upgrade") is False:
        return "miredoctl_upgrade: false"
    root = str(hv.get("miredoctl_root") or DEFAULT_ROOT).rstrip("/")
    python = hv.get("miredoctl_python")
    if python is None or "{{" in str(python) or "{{" in root:
        return None
    if not str(python).startswith(root + "/"):
        return (f"miredoctl_python {python} is not miredoctl's own venv (under {root}): "
                f"install teredo-fleet {schema.version()} there yourself")
    return None


def setup_hosts(controller: Controller, hosts: list[str], *, packages: bool,
                install: bool = True) -> dict[str, SetupResult]:
    """Run hostsetup.py on `hosts` (all at once); packages only for `hosts bootstrap`."""
    tar = ""
    if install:
        tar = str(wheelhouse.build(controller.state_dir / "wheels"))
    extra = {"miredoctl_wheels_tar": tar, "miredoctl_identity": schema.identity(),
             "miredoctl_install": schema.install_id(),
             "miredoctl_do_packages": packages,
             "miredoctl_default_packages": list(DEFAULT_PACKAGES),
             "miredoctl_hostsetup": Path(hostsetup.__file__).read_text()}
    play = PLAY % {"root": DEFAULT_ROOT, "state": DEFAULT_STATE}
    answers, proc = controller.play(play, extra, hosts)
    return {h: _judge(h, answers[h], proc.returncode) for h in hosts}


def _judge(host: str, res: dict[str, Any] | None, ansible_rc: int) -> SetupResult:
    if res is None:
        return SetupResult(host, "not attempted" if ansible_rc in (0, 2, 4, 6) else "failed",
                           detail="" if ansible_rc in (0, 2, 4, 6)
                           else f"ansible-playbook exit {ansible_rc}")
    if res.get("unreachable"):
        return SetupResult(host, "unreachable", detail=_ssh_error(res.get("msg", "")))
    answer = None
    for line in reversed(str(res.get("stdout") or "").splitlines()):
        if line.startswith("{"):
            try:
                answer = json.loads(line)
            except ValueError:
                pass
            break
    if answer is None:
        why = (res.get("stderr") or res.get("msg") or "no answer").strip().splitlines()
        return SetupResult(host, "failed", detail=one_line(why[-1] if why else "no answer")[:300])
    if answer.get("error"):
        return SetupResult(host, "failed", list(answer.get("steps") or []),
                           one_line(str(answer["error"]))[:400])
    return SetupResult(host, "changed" if answer.get("changed") or res.get("changed")
                       else "unchanged", list(answer.get("steps") or []))


def upgrade(controller: Controller, hosts: list[str]) -> dict[str, SetupResult]:
    """Install the controller's teredo-fleet on `hosts` whose agent reported another one;
    hosts whose Python is not miredoctl's own are refused here, without contacting them."""
    out: dict[str, SetupResult] = {}
    todo = []
    for h in hosts:
        why = managed_python(controller, h)
        if why:
            out[h] = SetupResult(h, "failed", detail=why)
        else:
            todo.append(h)
    if todo:
        try:
            out.update(setup_hosts(controller, todo, packages=False))
        except MiredoctlError as exc:
            out.update({h: SetupResult(h, "failed", detail=one_line(str(exc))) for h in todo})
    return out
