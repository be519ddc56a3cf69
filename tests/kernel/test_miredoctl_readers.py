"""Non-root readers (miredoctl/access.py) with a real supervisord and real engines.

A throwaway group (MIREDOCTL_GROUP) and a throwaway member made with groupadd/useradd, both
removed afterwards. The member runs `status`, `show` and `logs` (the engines' status sockets
and supervisord's socket belong to the group); `up` and `down` stop at one "needs root"
line. A user outside the group gets a one-line permission error, never "internal error".

The commands run in a forked child that drops to the user (the interpreter may live where
that user cannot read, e.g. under /root), after the parent ran each of them once as root so
every module they import is already loaded.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from miredoctl import cli
from teredolab import netns
from teredolab.topology import NetnsLab
from tests.kernel.conftest import module_lab
from tests.kernel.test_miredoctl_fleet import ENGINE_ROLES, Ctl, make_fleet

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def readers_lab() -> Iterator[NetnsLab]:
    yield from module_lab()


@pytest.fixture
def member(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(user, group): made for this test, removed after it."""
    tag = secrets.token_hex(3)
    group, user = f"mctl-g{tag}", f"mctl-u{tag}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--no-user-group", "--gid", group,
                        "--shell", "/usr/sbin/nologin", user], check=True)
        try:
            monkeypatch.setenv("MIREDOCTL_GROUP", group)
            yield user, group
        finally:
            subprocess.run(["userdel", user], check=True)
    finally:
        subprocess.run(["groupdel", group], check=True)


def as_user(user: str, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """cli.main(argv) in a child that dropped to `user` (its primary group only)."""
    pw = pwd.getpwnam(user)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            # pytest's capture replaced sys.stdout/stderr: write to the real descriptors
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.environ.update(env)
            code = cli.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


@pytest.fixture
def fleet_ctl(readers_lab: NetnsLab, member: tuple[str, str]) -> Iterator[Ctl]:
    # outside pytest's tmp folder, which only root can enter
    base = Path(tempfile.mkdtemp(prefix="miredoctl-readers-"))
    base.chmod(0o755)
    ctl = Ctl(readers_lab, make_fleet(readers_lab, base / "fleet"), base / "state")
    try:
        yield ctl
    finally:
        ctl.run("down", expect=None)
        pidfile = ctl.state / "supervisord.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        left = {r: netns.pids(readers_lab.ns(r)) for r in ENGINE_ROLES
                if netns.pids(readers_lab.ns(r))}
        if left:
            netns.stop_pids([p for pids in left.values() for p in pids])
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left in lab namespaces: {left}"


def test_group_members_read_and_everyone_else_is_told(fleet_ctl: Ctl,
                                                      member: tuple[str, str],
                                                      capsys: pytest.CaptureFixture) -> None:
    user, group = member
    ctl = fleet_ctl
    ctl.run("up")  # as root, with MIREDOCTL_GROUP set: the folders go to the group
    ctl.run("wait", "--timeout", "30")
    assert oct(ctl.state.stat().st_mode & 0o7777) == "0o750"
    assert (ctl.state / "run").stat().st_mode & 0o2000  # setgid: sockets inherit the group
    assert "chown=root:" + group in (ctl.state / "supervisord.conf").read_text()
    env = {"MIREDOCTL_FLEET": str(ctl.fleet), "MIREDOCTL_STATE": str(ctl.state)}
    os.environ.update(env)
    try:
        for argv in (["status", "--json"], ["show", "client1"], ["logs", "-n", "5", "--json"]):
            assert cli.main(argv) == 0  # as root first: every module is loaded
    finally:
        for key in env:
            os.environ.pop(key, None)
    capsys.readouterr()

    code, out, err = as_user(user, ["status", "--json"], env)
    assert (code, err) == (0, ""), err
    rows = {r["name"]: r for r in json.loads(out)["instances"]}
    assert {r["state"] for r in rows.values()} == {"RUNNING"}
    # the engine answered on its status socket (group-owned), not only supervisord
    assert rows["client1"]["tunnel_state"] == "qualified"
    assert rows["client1"]["source"].startswith("status socket")
    code, out, err = as_user(user, ["show", "client1"], env)
    assert code == 0 and "instance: client1" in out and "internal error" not in err
    # --json: plain `logs` writes to the sys.stdout bound when logs.py was imported, which
    # in this forked child is pytest's capture, not the pipe
    code, out, err = as_user(user, ["logs", "-n", "5", "--json"], env)
    assert (code, err) == (0, "") and len(json.loads(out)["lines"]) == 5

    for argv in (["up"], ["down"], ["restart", "--all"]):
        code, out, err = as_user(user, argv, env)
        assert code == 1 and out == "", argv
        assert err.startswith(f"miredoctl: `{argv[0]}` needs root; members of the {group} "
                              "group may run "), err
        assert err.count("\n") == 1
    assert set(ctl.pids().values()) and all(ctl.pids().values())  # nothing was stopped

    # outside the group: one line naming what it could not read
    for argv in (["status"], ["logs"]):
        code, out, err = as_user("nobody", argv, env)
        assert code != 0 and err.count("\n") == 1, (argv, err)
        assert "internal error" not in err and "permission denied" in err.lower(), (argv, err)
