"""Workers of different instances cannot signal each other (issue 9, least privilege).

A worker drops root to one account; processes of one uid may signal each other, so workers
that all run as `nobody` (the old default) are one compromised worker away from all being
killed.  With an account per instance (`-u`, or `user: auto` in the manager), `kill(2)` from
one worker's uid at the other worker fails with EPERM.  The probe runs Debian's python as
that uid (`setpriv`), the way a compromised worker would call `os.kill`; a control probe of
the same uid at its own worker succeeds (signal 0), so EPERM is not an artefact of the probe.

Every account here is created by the test under a unique name and removed in `finally`.
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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runtime.status_server import query
from tests.kernel.harness import venv_python, wait_for

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
PY = venv_python()  # the venv of this checkout, or the running interpreter (a worktree)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PROBE_PY = "/usr/bin/python3"  # readable by any uid, unlike a virtualenv under /root
ADDRS = ("198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13")
PROBE = """
import os, sys
pid, sig = int(sys.argv[1]), int(sys.argv[2])
try:
    os.kill(pid, sig)
except PermissionError:
    print("EPERM")
except ProcessLookupError:
    print("ESRCH")
else:
    print("OK")
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "kernel test: needs root"
    for tool in ("setpriv", "useradd", "userdel"):
        if shutil.which(tool) is None:
            return f"kernel test: `{tool}` is not installed"
    if not os.access(PROBE_PY, os.X_OK):
        return f"kernel test: {PROBE_PY} is missing"
    return None


def probe(uid: int, gid: int, pid: int, sig: int) -> str:
    """`os.kill(pid, sig)` run as uid:gid with no supplementary groups: OK, EPERM or ESRCH."""
    cp = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                         PROBE_PY, "-c", PROBE, str(pid), str(sig)],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def userdel(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


@pytest.fixture
def test_users() -> Iterator[list[str]]:
    """Two fresh system accounts with unique names, removed afterwards."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    names = [f"tdt{tag}a", f"tdt{tag}b"]
    try:
        for n in names:
            sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
               "/nonexistent", "--shell", "/usr/sbin/nologin", n)
        yield names
    finally:
        for n in names:
            userdel(n)


@pytest.fixture
def ns() -> Iterator[str]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"h6wu-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", name, "ip", "link", "add", "v0", "type", "veth", "peer",
           "name", "v1")
        for a in ADDRS:
            sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{a}/24", "dev", "v0")
        for dev in ("v0", "v1"):
            sh("ip", "netns", "exec", name, "ip", "link", "set", dev, "up")
        yield name
    finally:
        for pid in [int(p) for p in sh("ip", "netns", "pids", name).split()]:
            try:  # only the engines this test started live in this namespace
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


def start_server(ns: str, d: Path, name: str, a1: str, a2: str, user: str
                 ) -> tuple[subprocess.Popen, dict]:
    conf = d / f"{name}.conf"
    conf.write_text(f"ServerBindAddress {a1}\nServerBindAddress2 {a2}\n")
    sock = str(d / f"{name}.sock")
    with open(d / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "engine", "-f", "-c",
                                 str(conf), "-p", str(d / f"{name}.pid"), "--status-socket",
                                 sock, "-u", user], stdout=log, stderr=subprocess.STDOUT,
                                env=ENV)

    def ready() -> dict | None:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: {(d / f'{name}.log').read_text()}")
        try:
            st = query(sock)
        except (OSError, ValueError):
            return None
        return st if st.get("worker_pid") else None

    return proc, wait_for(ready, f"{name} status socket")


def test_workers_of_two_instances_cannot_signal_each_other(ns, test_users, tmp_path):
    procs = []
    try:
        a_proc, a = start_server(ns, tmp_path, "a", ADDRS[0], ADDRS[1], test_users[0])
        procs.append(a_proc)
        b_proc, b = start_server(ns, tmp_path, "b", ADDRS[2], ADDRS[3], test_users[1])
        procs.append(b_proc)
        ua, ub = (pwd.getpwnam(n) for n in test_users)
        wa, wb = a["worker_pid"], b["worker_pid"]
        assert (a["user"], b["user"]) == tuple(test_users)
        assert (uid_of(wa), uid_of(wb)) == (ua.pw_uid, ub.pw_uid)
        # control: a worker's own uid may signal it (signal 0 only checks)
        assert probe(ua.pw_uid, ua.pw_gid, wa, 0) == "OK"
        # across instances, in both directions, even SIGKILL: refused
        for (u, target) in ((ua, wb), (ub, wa)):
            assert probe(u.pw_uid, u.pw_gid, target, 0) == "EPERM"
            assert probe(u.pw_uid, u.pw_gid, target, signal.SIGKILL) == "EPERM"
            assert probe(u.pw_uid, u.pw_gid, target, signal.SIGSTOP) == "EPERM"
        # nor the other instance's privileged parent
        assert probe(ua.pw_uid, ua.pw_gid, b_proc.pid, signal.SIGTERM) == "EPERM"
        assert query(str(tmp_path / "a.sock"))["worker_pid"] == wa  # both still running
        assert query(str(tmp_path / "b.sock"))["worker_pid"] == wb
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(20) for p in procs]
    assert codes == [0] * len(procs)


# --------------------------------------------------------------------------- the manager
def _ctl(fleet: Path, state: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIREDOCTL_FLEET": str(fleet), "MIREDOCTL_STATE": str(state)}
    env.pop("MIREDOCTL_DEBUG", None)
    cp = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args], env=env,
                        capture_output=True, text=True, timeout=120)
    assert "Traceback" not in cp.stderr, cp.stderr
    assert cp.returncode == expect, (args, cp.returncode, cp.stdout, cp.stderr)
    return cp


def test_user_auto_gives_each_instance_its_own_account(lab_factory, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from miredoctl.users import auto_user_name

    lab = lab_factory(with_client2=False)
    spec = lab.spec
    tag = secrets.token_hex(3)
    names = {"server": f"s{tag}", "relay": f"r{tag}"}
    users = {role: auto_user_name(n) for role, n in names.items()}
    for u in users.values():
        with pytest.raises(KeyError):
            pwd.getpwnam(u)
    fleet, state = tmp_path / "fleet", tmp_path / "state"
    fleet.mkdir()
    (fleet / "defaults.yaml").write_text("allow_documentation_addresses: true\n"
                                         "all:\n  user: auto\n")
    (fleet / f"{names['server']}.yaml").write_text(
        f"role: server\nnetns: {lab.ns('srv')}\nserver_bind_address: {spec.srv_ip1}\n"
        f"server_bind_address2: {spec.srv_ip2}\n")
    (fleet / f"{names['relay']}.yaml").write_text(
        f"role: relay\nnetns: {lab.ns('rly')}\nbind_address: {spec.rly_ip4}\n"
        f"bind_port: {spec.relay_port}\ninterface: {spec.teredo_if}\n")
    try:
        _ctl(fleet, state, "validate")
        up = json.loads(_ctl(fleet, state, "up", "--json").stdout)["results"]
        created = {r["name"]: r["detail"] for r in up if r["action"] == "user created"}
        assert set(created) == set(names.values()), up
        for role, n in names.items():
            assert created[n].startswith(users[role] + " (uid ")
        _ctl(fleet, state, "wait", "--timeout", "30")
        rows = {r["name"]: r for r in
                json.loads(_ctl(fleet, state, "status", "--json").stdout)["instances"]}
        workers = {}
        for role, n in names.items():
            pid = rows[n]["pid"]
            kids = wait_for(lambda pid=pid: children(pid), f"{n}'s worker")
            workers[role] = kids[0]
            assert uid_of(kids[0]) == pwd.getpwnam(users[role]).pw_uid
        s, r = (pwd.getpwnam(users[k]) for k in ("server", "relay"))
        assert probe(s.pw_uid, s.pw_gid, workers["server"], 0) == "OK"
        assert probe(s.pw_uid, s.pw_gid, workers["relay"], signal.SIGKILL) == "EPERM"
        assert probe(r.pw_uid, r.pw_gid, workers["server"], signal.SIGKILL) == "EPERM"
        # a second `up` finds the accounts and creates nothing
        again = json.loads(_ctl(fleet, state, "up", "--json").stdout)["results"]
        assert not [x for x in again if x["action"] == "user created"], again
        _ctl(fleet, state, "down")
        for u in users.values():  # never removed automatically
            pwd.getpwnam(u)
    finally:
        pidfile = state / "supervisord.pid"
        if pidfile.exists():
            subprocess.run([sys.executable, "-m", "miredoctl.cli", "down"], capture_output=True,
                           env={**os.environ, "MIREDOCTL_FLEET": str(fleet),
                                "MIREDOCTL_STATE": str(state)}, timeout=120)
        time.sleep(0.1)
        for u in users.values():  # this test made them
            userdel(u)
