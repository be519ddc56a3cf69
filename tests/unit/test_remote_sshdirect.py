"""Plain ssh to a host (miredoctl/remote/sshdirect.py): the ssh command line ansible would
have used, and the hosts that must go through ansible instead (no SSH made here)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from miredoctl.remote.hosts import HostEntry
from miredoctl.remote.sshdirect import Target, target

OPTS = ["-o", "StrictHostKeyChecking=yes"]


def entry(**v: object) -> HostEntry:
    return HostEntry("fra1", 3, dict(v))


def make(**v: object) -> Target | None:
    return target(entry(**v), OPTS, Path("/st/ssh"), root_default="/var/lib/miredoctl",
                  state_default="/run/miredoctl/host-")


def test_ansible_variables_become_ssh_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIREDOCTL_REMOTE_VIA", raising=False)
    t = make(ansible_host="192.0.2.10", ansible_port=2222, ansible_user="deploy",
             ansible_ssh_private_key_file="/k/id", ansible_ssh_common_args="-o ProxyJump=b")
    assert t is not None
    argv = t.command(["--", "status"])
    assert argv[:3] == ["ssh", "-o", "StrictHostKeyChecking=yes"]
    assert "ControlPath=/st/ssh/d-%C" in argv and "IdentityFile=/k/id" in argv
    assert "Port=2222" in argv and "User=deploy" in argv and "ProxyJump=b" in argv
    assert argv[-3:-1] == ["--", "192.0.2.10"]
    # deploy is not root: the agent runs through sudo, without a password prompt
    assert shlex.split(argv[-1]) == [
        "sudo", "-n", "-H", "-u", "root", "--", "/var/lib/miredoctl/venv/bin/python", "-m",
        "miredoctl.remote.agent", "--host", "fra1", "--root", "/var/lib/miredoctl",
        "--state-dir", "/run/miredoctl/host-fra1", "--", "status"]


def test_root_needs_no_sudo_and_miredoctl_variables_apply(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIREDOCTL_REMOTE_VIA", raising=False)
    t = make(ansible_host="192.0.2.10", ansible_user="root", miredoctl_root="/opt/m",
             miredoctl_state="/run/x", miredoctl_python="/opt/py")
    assert t is not None and not t.become
    assert shlex.split(t.command(["--", "status"])[-1])[:8] == [
        "/opt/py", "-m", "miredoctl.remote.agent", "--host", "fra1", "--root", "/opt/m",
        "--state-dir"]


@pytest.mark.parametrize("variables", [
    {"ansible_host": "{{ lookup('env', 'H') }}"},
    {"ansible_host": "192.0.2.1", "ansible_password": "x"},
    {"ansible_host": "192.0.2.1", "ansible_connection": "docker"},
    {"ansible_host": "192.0.2.1", "ansible_become_method": "su"},
    {"ansible_host": "192.0.2.1", "ansible_become_user": "teredo"},
])
def test_what_plain_ssh_cannot_reproduce_goes_through_ansible(
        variables: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIREDOCTL_REMOTE_VIA", raising=False)
    assert make(**variables) is None


def test_the_environment_can_send_every_host_through_ansible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIREDOCTL_REMOTE_VIA", "ansible")
    assert make(ansible_host="192.0.2.10") is None
