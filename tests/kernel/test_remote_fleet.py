"""A fleet across three hosts, end to end: real sshd per namespace host, real ansible-core.

The controller is this process's namespace; each host is a namespace with its own sshd and
/run (tests/kernel/sshhosts.py). One relay per host. The hosts are built once for the module
(a few seconds); the tests run in file order and each starts from the fleet it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.sshhosts import Host, SshHosts, missing

pytestmark = pytest.mark.kernel

GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


@dataclass
class Fleet:
    root: Path
    state: Path
    hosts: list[Host]
    ssh: SshHosts

    def miredoctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miredoctl.cli", "--fleet", str(self.root),
                               "--state-dir", str(self.state), *args],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, MIREDOCTL_DEBUG="1"))

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        r = self.miredoctl(*args, "--json")
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, json.loads(r.stdout)

    def commit(self, files: dict[str, str], message: str) -> None:
        for name, text in files.items():
            (self.root / name).write_text(text)
        subprocess.run(["git", "add", "-A"], cwd=self.root, check=True)
        subprocess.run(["git", "commit", "-qm", message], cwd=self.root, check=True,
                       env=dict(os.environ, **GIT_ENV))


def relay(host: str, extra: str = "") -> str:
    return f"role: relay\nhost: {host}\n{extra}"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    yield from three_hosts()


def three_hosts() -> Iterator[Fleet]:
    """Three namespace hosts with a relay each, in a fleet folder of its own (git); removed
    whole afterwards. A generator, so other test modules build their own (`yield from`)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="mdr-"))  # short: ssh control socket paths
    ssh = SshHosts(base / "h")
    state = base / "st"
    f: Fleet | None = None
    try:
        hosts = ssh.make(3)
        root = base / "fleet"
        root.mkdir()
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        lines = ["all:", "  vars:", "    ansible_user: root",
                 f"    ansible_ssh_private_key_file: {ssh.client_key}",
                 "    ansible_python_interpreter: /usr/bin/python3",
                 f"    miredoctl_python: {sys.executable}", "  hosts:"]
        for h in hosts:
            # state paths of this run alone: another run's hosts on this machine share /proc,
            # and engines are recognised by the paths on their command lines
            lines += [f"    {h.name}:", f"      ansible_host: {h.address}",
                      f"      miredoctl_root: {h.root}/agent",
                      f"      miredoctl_state: /run/miredoctl/{ssh.tag}-{h.name}"]
        files = {"defaults.yaml": "allow_documentation_addresses: true\n",
                 "hosts.yaml": "\n".join(lines) + "\n",
                 "known_hosts": ssh.known_hosts.read_text()}
        files.update({f"r{i + 1}.yaml": relay(h.name) for i, h in enumerate(hosts)})
        f = Fleet(root, state, hosts, ssh)
        f.commit(files, "three relays on three hosts")
        yield f
    finally:
        if f is not None:
            f.miredoctl("down")
        for sock in (state / "ssh").glob("*") if (state / "ssh").is_dir() else ():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                           capture_output=True, timeout=10)
        errors = ssh.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
        assert not errors, errors


def by_host(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


def test_three_hosts_up_status_reload_down(fleet: Fleet) -> None:
    rc, doc = fleet.json("up")
    assert rc == 0, doc
    assert {h: v["outcome"] for h, v in by_host(doc).items()} == {
        "host1": "done", "host2": "done", "host3": "done"}
    assert sorted((r["host"], r["name"], r["action"]) for r in doc["results"]) == [
        ("host1", "r1", "started"), ("host2", "r2", "started"), ("host3", "r3", "started")]

    rc, st = fleet.json("status")
    assert rc == 0, st
    assert sorted((r["host"], r["name"], r["state"]) for r in st["instances"]) == [
        ("host1", "r1", "RUNNING"), ("host2", "r2", "RUNNING"), ("host3", "r3", "RUNNING")]
    text = fleet.miredoctl("status").stdout
    assert text.splitlines()[0].split()[:2] == ["NAME", "HOST"]
    rc, hs = fleet.json("hosts")
    assert rc == 0 and [(h["host"], h["reachable"], h["supervisord"], h["running"])
                        for h in hs["hosts"]] == [("host1", True, True, 1),
                                                  ("host2", True, True, 1),
                                                  ("host3", True, True, 1)], hs

    # the host runs the shipped commit; its rendered header says which
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=fleet.root,
                          capture_output=True, text=True, check=True).stdout.strip()
    conf = Path("/proc", str(st["instances"][0]["pid"]), "root")  # the host's own /run
    rendered = (conf / f"run/miredoctl/{fleet.ssh.tag}-host1/configs/r1.conf").read_text()
    assert f"fleet commit {head}" in rendered

    # a selection by host touches that host only
    rc, doc = fleet.json("reload", "--host", "host2")
    assert rc == 0 and [h["host"] for h in doc["hosts"]] == ["host2"], doc

    rc, logs = fleet.json("logs", "-n", "50")
    assert rc == 0 and {ln["host"] for ln in logs["lines"]} == {"host1", "host2", "host3"}, logs
    times = [ln["time"] for ln in logs["lines"] if ln["time"] is not None]
    assert times == sorted(times)
    text = fleet.miredoctl("logs", "-n", "3").stdout.splitlines()
    assert len(text) == 3 and all(" | " in ln and "/r" in ln.split(" | ")[0] for ln in text)

    rc, doc = fleet.json("reload", "--all")
    assert rc == 0, doc
    assert [(r["host"], r["action"]) for r in doc["results"]] == [
        ("host1", "signalled"), ("host2", "signalled"), ("host3", "signalled")]

    rc, doc = fleet.json("down")
    assert rc == 0, doc
    rc, st = fleet.json("status")
    assert {r["state"] for r in st["instances"]} == {"STOPPED"}, st


def test_status_over_plain_ssh_and_through_ansible_agree(fleet: Fleet) -> None:
    """status goes over plain ssh (miredoctl/remote/sshdirect.py); forced through
    ansible-playbook it must say the same, host by host."""
    assert fleet.miredoctl("up").returncode == 0
    rc, direct = fleet.json("status")
    r = subprocess.run([sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet.root),
                        "--state-dir", str(fleet.state), "status", "--json"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, MIREDOCTL_REMOTE_VIA="ansible"))
    assert rc == r.returncode == 0, (direct, r.stderr)
    via = json.loads(r.stdout)

    def rows(doc: dict[str, Any]) -> list[tuple[str, str, str, int]]:
        return sorted((x["host"], x["name"], x["state"], x["pid"]) for x in doc["instances"])
    assert rows(direct) == rows(via) and len(rows(direct)) == 3, (direct, via)


def test_logs_follow_merges_hosts_and_leaves_nothing_running(fleet: Fleet) -> None:
    """`logs -f` across hosts: the last lines of all hosts, then new lines as they come (a
    restart on host2 shows up), in time order; when it is stopped, no agent is left
    following on any host."""
    assert fleet.miredoctl("up").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet.root),
                             "--state-dir", str(fleet.state), "logs", "-f", "-n", "6",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    got: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            got.append(json.loads(text))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(got) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(got) == 6, (got, proc.poll())
        first = list(got)
        rc, doc = fleet.json("restart", "r2")
        assert rc == 0, doc
        new_pid = next(r for r in fleet.json("status")[1]["instances"] if r["name"] == "r2")["pid"]
        mark = f"[{new_pid}]: starting relay"
        while not any(mark in ln["text"] for ln in got) and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        assert any(mark in ln["text"] and ln["host"] == "host2" for ln in got), got
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    reader.join(timeout=10)
    assert {ln["host"] for ln in first} <= {"host1", "host2", "host3"}
    times = [ln["time"] for ln in got if ln["time"] is not None]
    assert times == sorted(times), got
    assert all(ln["time"] >= max(x["time"] for x in first) for ln in got[6:]), got
    deadline = time.monotonic() + 30
    while any(_agent_running(h, "miredoctl.remote.agent") for h in fleet.hosts):
        assert time.monotonic() < deadline, "an agent kept following after the controller went"
        time.sleep(0.2)


def test_config_and_diff_are_asked_of_each_host(fleet: Fleet) -> None:
    """config renders on each host (its own paths); diff shows, per host, what the next `up`
    would change there: nothing, then r2's new MTU on host2 only."""
    assert fleet.miredoctl("up").returncode == 0
    rc, doc = fleet.json("config")
    assert rc == 0, doc
    assert sorted((v["host"], n) for n, v in doc.items()) == [
        ("host1", "r1"), ("host2", "r2"), ("host3", "r3")], doc
    assert all(v["config"] and v["sha256"] for v in doc.values()), doc
    text = fleet.miredoctl("config", "--host", "host2").stdout
    assert text.startswith("# ==> host2/r2\n") and "# ==> host1" not in text, text
    rc, doc = fleet.json("diff", "--exit-code")
    assert rc == 0 and set(doc["hosts"]) == {"host1", "host2", "host3"}, doc
    assert all(h["diff"] == "" for h in doc["hosts"].values()), doc
    fleet.commit({"r2.yaml": relay("host2", "mtu: 1400\n")}, "r2: mtu 1400")
    try:
        rc, doc = fleet.json("diff", "--exit-code")
        assert rc == 1, doc
        assert "+InterfaceMTU 1400" in doc["hosts"]["host2"]["diff"], doc
        assert doc["hosts"]["host1"]["diff"] == doc["hosts"]["host3"]["diff"] == "", doc
        assert [p["action"] for p in doc["hosts"]["host2"]["plan"]] != ["unchanged"], doc
        assert fleet.miredoctl("diff").returncode == 0  # without --exit-code
    finally:
        fleet.commit({"r2.yaml": relay("host2")}, "r2 back")


def test_metrics_of_all_hosts_carry_a_host_label(fleet: Fleet) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert fleet.miredoctl("up").returncode == 0
    r = fleet.miredoctl("metrics")
    assert r.returncode == 0, r.stderr
    families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    assert sorted((s.labels["host"], s.labels["instance"], s.value)
                  for s in families["teredo_up"].samples) == [
        ("host1", "r1", 1.0), ("host2", "r2", 1.0), ("host3", "r3", 1.0)], r.stdout
    assert {s.labels["host"] for s in families["teredo_supervisord_up"].samples} == {
        "host1", "host2", "host3"}


def test_rolling_reload_stops_at_the_bad_host(fleet: Fleet) -> None:
    """The fleet's own template gives r2 a directive no engine knows: host2's config checkers
    refuse it before anything is written (its engine keeps running the config it had), host3
    is not attempted, and the output says so per host."""
    assert fleet.miredoctl("up").returncode == 0
    default = Path(__file__).resolve().parents[2] / "templates" / "miredo.conf.j2"
    (fleet.root / "templates").mkdir(exist_ok=True)
    fleet.commit({"templates/miredo.conf.j2": default.read_text()
                  + '{% if name == "r2" %}NoSuchDirective yes\n{% endif %}',
                  "r1.yaml": relay("host1", "mtu: 1400\n"),
                  "r3.yaml": relay("host3", "mtu: 1400\n")}, "a bad config for r2")
    try:
        rc, doc = fleet.json("reload", "--all")
        assert rc == 1, json.dumps(doc, indent=1)
        hosts = by_host(doc)
        assert hosts["host1"]["outcome"] == "done"
        assert hosts["host2"]["outcome"] == "failed"
        assert "nothing was changed" in hosts["host2"]["detail"], hosts["host2"]
        assert hosts["host3"]["outcome"] == "not attempted"
        text = fleet.miredoctl("reload", "--all").stdout
        assert "host3: not attempted" in text and "host2: failed (" in text, text
        # host2 still runs, with the config it had
        rc, st = fleet.json("status", "--host", "host2")
        assert [(r["name"], r["state"]) for r in st["instances"]] == [("r2", "RUNNING")], st
        # --max-fail 100% goes on past the failure
        rc, doc = fleet.json("reload", "--all", "--max-fail", "100%")
        assert by_host(doc)["host3"]["outcome"] == "done", doc
    finally:
        (fleet.root / "templates" / "miredo.conf.j2").unlink()
        fleet.commit({f"r{i}.yaml": relay(f"host{i}") for i in (1, 2, 3)}, "back to plain")


def test_a_host_that_fails_half_way_through_a_reload_rolls_back(fleet: Fleet) -> None:
    """host2 runs r2 and r2b; in a rolling reload its state folder refuses r2b's new config
    (the file became a folder) after r2 was already rewritten and signalled. host2 puts r2's
    previous config back and restarts r2 with it, counts as failed (`rolled back: r2`), and
    host3 is not attempted."""
    fleet.commit({"r2b.yaml": relay("host2", "interface: teredo2b\n")}, "a second relay on host2")
    try:
        rc, doc = fleet.json("up")
        assert rc == 0, doc
        rows = {r["name"]: r for r in fleet.json("status")[1]["instances"]}
        sshd = fleet.hosts[1].sshd
        assert sshd is not None
        root = Path("/proc", str(sshd.pid), "root")  # host2's own /run, as its sshd sees it
        configs = root / f"run/miredoctl/{fleet.ssh.tag}-host2/configs"
        before = (configs / "r2.conf").read_text()
        (configs / "r2b.conf").unlink()
        (configs / "r2b.conf").mkdir()
        fleet.commit({f"{n}.yaml": relay(h, extra + "mtu: 1400\n") for n, h, extra in (
            ("r1", "host1", ""), ("r2", "host2", ""), ("r2b", "host2", "interface: teredo2b\n"),
            ("r3", "host3", ""))}, "mtu 1400 everywhere")
        rc, doc = fleet.json("reload", "--all")
        assert rc == 1, json.dumps(doc, indent=1)
        hosts = by_host(doc)
        assert hosts["host1"]["outcome"] == "done", hosts
        assert hosts["host2"]["outcome"] == "failed", hosts
        assert hosts["host2"]["rolled_back"] == ["r2"], hosts["host2"]
        assert "rolled back: r2" in hosts["host2"]["detail"], hosts["host2"]
        assert hosts["host3"]["outcome"] == "not attempted", hosts
        assert (configs / "r2.conf").read_text() == before
        rc, st = fleet.json("status", "--host", "host2")
        states = {r["name"]: r["state"] for r in st["instances"]}
        assert states["r2"] == "RUNNING" and rows["r2"]["pid"] != next(
            r["pid"] for r in st["instances"] if r["name"] == "r2"), st  # restarted
        (configs / "r2b.conf").rmdir()
    finally:
        fleet.miredoctl("down", "r2b")
        (fleet.root / "r2b.yaml").unlink()
        fleet.commit({f"r{i}.yaml": relay(f"host{i}") for i in (1, 2, 3)}, "back to plain")


def test_unknown_or_changed_host_key_is_refused(fleet: Fleet) -> None:
    pinned = (fleet.root / "known_hosts").read_text()
    other = SshHosts(fleet.ssh.base / "other")  # only for a key that is not host1's
    other.base.mkdir()
    key = other.base / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    wrong = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    h1 = fleet.hosts[0]
    unknown = "".join(ln + "\n" for ln in pinned.splitlines()
                      if not ln.startswith(h1.address + " "))
    for known, word in ((unknown, "host key"), (pinned.replace(h1.host_key_pub, wrong),
                                                "host key CHANGED")):
        fleet.commit({"known_hosts": known}, "known_hosts edited")
        _close_masters(fleet)  # a live SSH master would not look at known_hosts again
        try:
            rc, st = fleet.json("status")
            assert rc == 5, st
            rows = {r["name"]: r for r in st["instances"]}
            assert rows["r1"]["state"] == "UNREACHABLE" and word in rows["r1"]["error"], rows
            assert rows["r2"]["state"] != "UNREACHABLE" and rows["r3"]["state"] != "UNREACHABLE"
        finally:
            fleet.commit({"known_hosts": pinned}, "known_hosts restored")


def test_another_teredo_fleet_on_a_host_is_refused(fleet: Fleet) -> None:
    """host3's miredoctl_python runs a copy of teredo-fleet whose code differs: every command
    refuses to drive it, with a message, and serves the other hosts."""
    other = fleet.ssh.base / "other-install"
    top = Path(__file__).resolve().parents[2]
    for package in ("miredoctl", "engine"):
        shutil.copytree(top / package, other / "pkg" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "pkg" / "miredoctl" / "remote" / "schema.py").open("a") as f:
        f.write("# a different build\n")
    python = other / "python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={other / 'pkg'} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    hosts_yaml = (fleet.root / "hosts.yaml").read_text()
    h3 = fleet.hosts[2]
    fleet.commit({"hosts.yaml": hosts_yaml.replace(
        f"      ansible_host: {h3.address}\n",
        f"      ansible_host: {h3.address}\n      miredoctl_python: {python}\n")},
        "host3 runs another teredo-fleet")
    try:
        rc, st = fleet.json("status")
        hosts = by_host(st)
        assert hosts["host3"]["outcome"] == "failed", st
        assert "version mismatch" in hosts["host3"]["detail"], st
        assert "refused" in hosts["host3"]["detail"]
        assert hosts["host1"]["outcome"] == hosts["host2"]["outcome"] == "done"
        rc, doc = fleet.json("up")
        assert rc == 1 and by_host(doc)["host3"]["outcome"] == "failed", doc
        # logs -f does not upgrade either: it says so at once and follows the others
        proc = subprocess.Popen([sys.executable, "-m", "miredoctl.cli", "--fleet",
                                 str(fleet.root), "--state-dir", str(fleet.state), "logs",
                                 "-f", "-n", "1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # blocks until the first complaint (or the end)
            assert line.startswith("miredoctl: host3: refused (teredo-fleet "), line
            assert proc.poll() is None  # still following host1 and host2
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    finally:
        fleet.commit({"hosts.yaml": hosts_yaml}, "host3 back to this teredo-fleet")


def test_ssh_drop_in_the_middle_of_up_then_up_converges(fleet: Fleet) -> None:
    """The connection to host2 drops while its agent runs `up`: the host finishes (the agent
    ignores the hangup), the controller says what it knows, and a second `up` converges."""
    assert fleet.miredoctl("down").returncode == 0
    h2 = fleet.hosts[1]
    proc = subprocess.Popen([sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet.root),
                             "--state-dir", str(fleet.state), "up", "--serial", "3", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        dropped = 0
        while not dropped and proc.poll() is None and time.monotonic() < deadline:
            if _agent_running(h2):
                dropped = h2.drop_sessions()
            time.sleep(0.05)
        out, _err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert dropped, "the agent on host2 was never seen running"
    doc = json.loads(out)
    assert by_host(doc)["host2"]["outcome"] in ("unreachable", "failed"), doc
    # the second `up` finishes the job (or finds it finished); nothing is left half done
    rc, doc = fleet.json("up")
    assert rc == 0, doc
    rc, st = fleet.json("status")
    assert rc == 0 and {r["state"] for r in st["instances"]} == {"RUNNING"}, st


def _agent_running(host: Host, what: str = "miredoctl.cli") -> bool:
    for pid in subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                              text=True).stdout.split():
        try:
            if what.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def test_killed_sshd_is_unreachable_and_the_others_are_served(fleet: Fleet) -> None:
    assert fleet.miredoctl("up").returncode == 0
    fleet.hosts[2].kill_sshd()
    r = fleet.miredoctl("status")
    assert r.returncode == 5, r.stdout + r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert "UNREACHABLE" in lines["r3"] and "RUNNING" in lines["r1"] and "RUNNING" in lines["r2"]
    assert len(r.stdout.splitlines()) == 4  # one line per instance, the ssh error on it
    r = fleet.miredoctl("hosts")
    assert r.returncode == 5 and " NO " in r.stdout.splitlines()[3], r.stdout
    rc, doc = fleet.json("hosts", "bootstrap", "host3")
    assert rc == 5 and doc["hosts"][0]["outcome"] == "unreachable", doc
    assert "Connection refused" in doc["hosts"][0]["detail"], doc
    rc, doc = fleet.json("down")
    hosts = by_host(doc)
    assert rc == 5 and hosts["host3"]["outcome"] == "unreachable", doc
    assert hosts["host1"]["outcome"] == "done" and hosts["host2"]["outcome"] == "done"


def _close_masters(fleet: Fleet) -> None:
    for sock in (fleet.state / "ssh").glob("*"):
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                       capture_output=True, timeout=10)
