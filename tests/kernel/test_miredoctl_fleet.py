"""miredoctl end to end: a real supervisord, real engines, real namespaces (the lab).

One lab per module (its own random prefix); every test has its own fleet folder and state
folder, and its teardown stops its supervisord and checks that nothing is left running in the
lab's namespaces. The CLI runs as a subprocess so exit codes and "no traceback" are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teredolab import netns
from teredolab.topology import DEFAULT_PREFIX, NetnsLab
from tests.kernel.conftest import module_lab

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
ENGINE_ROLES = ("srv", "rly", "cli", "cli2")


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    yield from module_lab()


class Ctl:
    """Runs `miredoctl` against one test's fleet and state folders."""

    def __init__(self, lab: NetnsLab, fleet: Path, state: Path) -> None:
        self.lab, self.fleet, self.state = lab, fleet, state

    def run(self, *args: str, expect: int | None = 0, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        env = {**os.environ, "MIREDOCTL_FLEET": str(self.fleet),
               "MIREDOCTL_STATE": str(self.state)}
        env.pop("MIREDOCTL_DEBUG", None)
        proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str, expect: int | None = 0) -> Any:
        return json.loads(self.run(*args, "--json", expect=expect).stdout)

    def status(self, *names: str) -> dict[str, dict[str, Any]]:
        data = self.json("status", *names, expect=None)
        return {row["name"]: row for row in data["instances"]}

    def pids(self) -> dict[str, int | None]:
        return {name: row["pid"] for name, row in self.status().items()}

    def log(self, name: str) -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def wait(self, cond, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; status: {self.status()}")


def make_fleet(lab: NetnsLab, dest: Path, engine: str = "teredo-engine",
               overrides: dict[str, str] | None = None) -> Path:
    """The shipped default fleet, moved to this lab's namespaces."""
    dest.mkdir()
    for src in (ROOT / "instances").glob("*.yaml"):
        text = src.read_text().replace(DEFAULT_PREFIX, lab.spec.prefix)
        if src.name == "defaults.yaml":
            text = text.replace("engine: teredo-engine", f"engine: {engine}")
        (dest / src.name).write_text(text)
    for name, extra in (overrides or {}).items():
        with (dest / f"{name}.yaml").open("a") as fh:
            fh.write(extra)
    return dest


def _leftovers(lab: NetnsLab) -> dict[str, list[int]]:
    return {r: netns.pids(lab.ns(r)) for r in ENGINE_ROLES if netns.pids(lab.ns(r))}


@pytest.fixture
def ctl_factory(lab: NetnsLab, tmp_path: Path) -> Iterator:
    made: list[Ctl] = []

    def make(engine: str = "teredo-engine", overrides: dict[str, str] | None = None) -> Ctl:
        n = len(made)
        fleet = make_fleet(lab, tmp_path / f"fleet{n}", engine, overrides)
        ctl = Ctl(lab, fleet, tmp_path / f"state{n}")
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        ctl.run("down", expect=None)
        pidfile = ctl.state / "supervisord.pid"
        if pidfile.exists():  # down failed: stop the supervisord this test started, by pid
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    left = _leftovers(lab)
    if left:
        netns.stop_pids([p for pids in left.values() for p in pids])
    assert not left, f"processes left in lab namespaces after down: {left}"


def test_fleet_lifecycle_with_teredo_engine(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("validate")
    up = ctl.json("up", "--all")["results"]
    assert {r["name"]: r["action"] for r in up} == {
        "client1": "started", "client2": "started", "relay": "started", "server": "started"}
    ctl.run("wait", "--timeout", "30")
    rows = ctl.status()
    assert all(r["state"] == "RUNNING" and r["pid"] for r in rows.values())
    for name, wan in (("client1", lab.spec.nat_wan), ("client2", lab.spec.nat2_wan)):
        assert rows[name]["tunnel_state"] == "qualified"
        assert rows[name]["address"].startswith("2001:0:cb00:710a:")  # server 203.0.113.10
        assert rows[name]["mapped"].split(":")[0] == wan
    assert rows["server"]["bound"] == ["203.0.113.10:3544", "203.0.113.11:3544"]
    # the tunnels carry traffic: client -> native IPv6 host (via the relay), client -> client
    ping = lab.exec("cli", ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "3",
                            lab.spec.v6_host], timeout=30)
    assert ping.returncode == 0, ping.stdout
    ping = lab.exec("cli", ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "3",
                            rows["client2"]["address"]], timeout=30)
    assert ping.returncode == 0, ping.stdout

    # restart by tag: exactly the two clients get new pids
    before = ctl.pids()
    res = ctl.json("restart", "--tag", "edge")["results"]
    assert sorted(r["name"] for r in res) == ["client1", "client2"]
    after = ctl.pids()
    assert after["client1"] != before["client1"] and after["client2"] != before["client2"]
    assert after["relay"] == before["relay"] and after["server"] == before["server"]

    # reload: SIGHUP to exactly the selected running engines; a stopped one is reported
    hups_before = {n: ctl.log(n).count("SIGHUP") for n in after}
    ctl.run("down", "client2")
    assert ctl.status("client2")["client2"]["state"] == "STOPPED"
    proc = ctl.run("reload", "client1", "client2", "relay", "--json", expect=3)
    got = {r["name"]: r["action"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"client1": "signalled", "client2": "not running", "relay": "signalled"}
    ctl.wait(lambda: all(ctl.log(n).count("SIGHUP") == hups_before[n] + 1
                         for n in ("client1", "relay")), "HUP in the engine logs", 10)
    assert ctl.log("server").count("SIGHUP") == hups_before["server"]
    assert ctl.log("client2").count("SIGHUP") == hups_before["client2"]
    assert ctl.pids()["client1"] == after["client1"]  # a HUP is not a restart

    # status exit code: 3 while one instance is down, 0 once `up` started it again
    ctl.run("status", expect=3)
    res = {r["name"]: r["action"] for r in ctl.json("up")["results"]}
    assert res == {"client1": "unchanged", "client2": "started", "relay": "unchanged",
                   "server": "unchanged"}
    ctl.run("status")


def test_up_after_inventory_change_restarts_only_that_instance(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    before = ctl.pids()
    configs = {n: (ctl.state / "configs" / f"{n}.conf").stat().st_mtime_ns for n in before}
    with (ctl.fleet / "client2.yaml").open("a") as fh:
        fh.write("bind_port: 40001\n")
    diff = ctl.run("diff").stdout
    assert "+BindPort 40001" in diff and "restart    client2: config changed" in diff
    res = {r["name"]: r["action"] for r in ctl.json("up")["results"]}
    assert res == {"client1": "unchanged", "client2": "restarted", "relay": "unchanged",
                   "server": "unchanged"}
    after = ctl.pids()
    assert after["client2"] != before["client2"]
    assert {n: after[n] for n in ("client1", "relay", "server")} == \
        {n: before[n] for n in ("client1", "relay", "server")}
    for name in ("client1", "relay", "server"):  # identical output is not rewritten
        assert (ctl.state / "configs" / f"{name}.conf").stat().st_mtime_ns == configs[name]
    ctl.run("wait")
    assert "0.0.0.0:40001" in ctl.status("client2")["client2"]["bound"]
    # a second `up` with nothing changed touches nothing
    res = {r["name"]: r["action"] for r in ctl.json("up")["results"]}
    assert set(res.values()) == {"unchanged"}
    assert ctl.pids() == after


def test_killed_engine_is_restarted_and_status_shows_it(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    old = ctl.pids()["relay"]
    os.kill(old, signal.SIGKILL)
    row = ctl.wait(lambda: (r := ctl.status("relay")["relay"])["state"] == "RUNNING"
                   and r["pid"] not in (None, old) and r, "relay restarted by supervisord")
    assert row["pid"] != old
    # the reaper removed what the killed engine left behind, so the new one got its tunnel
    assert f"relay: killed leftover processes of group {old}" in \
        (ctl.state / "logs" / "reaper.log").read_text()
    ctl.run("wait")
    # the restart is counted (supervisord keeps no count; the fleet's history does)
    assert ctl.status("relay")["relay"]["restarts"] == 1
    assert all(r["restarts"] == 0 for n, r in ctl.status().items() if n != "relay")


def _restart_by_kill(ctl: Ctl, name: str) -> int:
    old = ctl.pids()[name]
    os.kill(old, signal.SIGKILL)
    row = ctl.wait(lambda: (r := ctl.status(name)[name])["process_state"] == "RUNNING"
                   and r["pid"] not in (None, old) and r, f"{name} restarted by supervisord")
    return row["pid"]


def test_flapping_engine_shows_and_exits_3_until_restarted(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    for _ in range(3):  # a crash loop that never reaches FATAL: each run outlives startsecs
        _restart_by_kill(ctl, "relay")
    row = ctl.status("relay")["relay"]
    assert (row["state"], row["process_state"], row["restarts"], row["flapping"]) == \
        ("FLAPPING", "RUNNING", 3, True)
    proc = ctl.run("status", expect=3)
    assert "FLAPPING" in proc.stdout.splitlines()[[ln.split()[0] for ln in
                                                    proc.stdout.splitlines()].index("relay")]
    ctl.run("status", "client1", "client2", "server")  # the others are fine: exit 0
    ctl.run("wait", "relay", "--timeout", "1", expect=3)
    shown = ctl.run("show", "relay", expect=3).stdout
    assert "restarts: 3 since the last start by an operator, 3 in the last 300 s (FLAPPING)" \
        in shown
    assert "recent log:" in shown and "process tree: " in shown
    # an operator restart starts a new count
    ctl.run("restart", "relay")
    row = ctl.status("relay")["relay"]
    assert (row["state"], row["restarts"], row["flapping"]) == ("RUNNING", 0, False)
    ctl.run("status")


def test_wait_needs_the_engine_itself_to_answer(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    pid = ctl.pids()["client1"]
    workers = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert workers, "teredo-engine runs its worker as a child"
    # the worker answers the status socket: frozen, it cannot. supervisord still says RUNNING
    # and the TUN interface still has the Teredo address, but that is no longer proof
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    try:
        row = ctl.status("client1")["client1"]
        # either the socket times out, or (3 s into the silence) the parent's heartbeat has
        # noticed and answers for its frozen worker: both say the engine is not healthy
        error = row["error"] or ""
        assert row["process_state"] == "RUNNING" and row["state"] == "UNRESPONSIVE", row
        assert "status socket" in error or "worker" in error, row
        ctl.run("wait", "client1", "--timeout", "0", expect=3)
    finally:
        for w in workers:
            os.kill(w, signal.SIGCONT)
    ctl.run("wait", "client1")


def test_logs_are_stamped_merged_and_cut_across_instances(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    # nothing changed: --changed signals nobody
    res = {r["name"]: r["action"] for r in ctl.json("reload", "--all", "--changed")["results"]}
    assert set(res.values()) == {"unchanged"} and len(res) == 4
    ctl.run("reload", "relay")  # one more line in the relay's log, after everything else

    def raw(name: str) -> list[str]:
        return ctl.log(name).splitlines()

    def stamped() -> list[dict[str, Any]]:
        return ctl.json("logs", "-n", "100000")["lines"]

    # every line supervisord captured is also in the stamped logs, with a time
    ctl.wait(lambda: all([ln["text"] for ln in stamped() if ln["name"] == n] == raw(n)
                         for n in ("client1", "client2", "relay", "server")) and
             any("SIGHUP" in x for x in raw("relay")), "stamped logs to catch up", 15)
    lines = stamped()
    assert lines and all(ln["time"] is not None for ln in lines)
    times = [ln["time"] for ln in lines]
    assert times == sorted(times)  # interleaved by time, not one block per instance
    assert {ln["name"] for ln in lines} == {"client1", "client2", "relay", "server"}
    # -n and --since cut the merged stream
    assert ctl.json("logs", "-n", "3")["lines"] == lines[-3:]
    cut = lines[len(lines) // 2]["time"]
    since = ctl.json("logs", "-n", "100000", "--since",
                     time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + "Z")["lines"]
    assert since == [ln for ln in lines if ln["time"] >= int(cut)]
    text = ctl.run("logs", "-n", "2").stdout.splitlines()
    assert len(text) == 2 and text[-1].startswith(lines[-1]["name"])
    ctl.run("logs", "--since", "last tuesday", expect=2)


def test_bad_inventories_give_file_line_errors_and_touch_nothing(lab: NetnsLab,
                                                                  ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    pids = ctl.pids()
    files = {p: p.read_bytes() for p in (ctl.state / "configs").iterdir()}
    cases = {
        "client1.yaml": ("bind_prot: 4000\n",
                         "client1.yaml:5: unknown key 'bind_prot' (did you mean 'bind_port'?)"),
        "relay.yaml": ("mtu: huge\n", "relay.yaml:7: mtu must be an integer 1280-65535, got "
                                      "string 'huge'"),
        "client3.yaml": (f"role: client\nserver: 203.0.113.10\nnetns: {lab.ns('cli')}\n",
                         f"client3.yaml:3: interface 'teredo' in netns {lab.ns('cli')} is also "
                         "used by client1"),
        "server.yaml": ("server_bind_address: 203.0.113.20\n",
                        "server.yaml:7: duplicate key 'server_bind_address' (first at line 4)"),
    }
    for name, (extra, _msg) in cases.items():
        with (ctl.fleet / name).open("a") as fh:
            fh.write(extra)
    for cmd in (("validate",), ("up",), ("reload", "--all"), ("diff",)):
        proc = ctl.run(*cmd, expect=1)
        for _extra, msg in cases.values():
            assert msg in proc.stderr, (cmd, proc.stderr)
        assert "nothing was changed" in proc.stderr
    (ctl.fleet / "client4.yaml").write_text("role: client\nserver: null\nnetns: x\n")
    proc = ctl.run("up", expect=1)
    assert "client4.yaml:1: a client needs 'server' (its Teredo server)" in proc.stderr
    assert ctl.pids() == pids
    assert {p: p.read_bytes() for p in (ctl.state / "configs").iterdir()} == files


def test_failed_up_leaves_the_running_fleet_as_it_was(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    conf = ctl.state / "configs" / "client1.conf"
    old_text = conf.read_text()
    # valid inventory, but the address is not on any interface in the namespace: the engine
    # cannot bind and exits, so supervisord gives up on it (FATAL)
    with (ctl.fleet / "client1.yaml").open("a") as fh:
        fh.write("bind_address: 198.18.0.99\n")
    proc = ctl.run("up", "client1", "--json", expect=1)
    res = [(r["name"], r["action"]) for r in json.loads(proc.stdout)["results"]]
    assert res == [("client1", "failed"), ("client1", "rolled back")]
    assert conf.read_text() == old_text
    ctl.run("wait")
    assert ctl.status("client1")["client1"]["state"] == "RUNNING"


def test_debian_miredo_as_engine(lab: NetnsLab, ctl_factory) -> None:
    if not (os.access("/usr/sbin/miredo", os.X_OK) and os.access("/usr/sbin/miredo-server",
                                                                  os.X_OK)):
        pytest.skip("Debian's miredo / miredo-server are not installed")
    # the server, relay and client2 run Debian's miredo; client1 runs ours, side by side
    ctl = ctl_factory(engine="miredo", overrides={"client1": "engine: teredo-engine\n"})
    ctl.run("up")
    ctl.run("wait")
    rows = ctl.status()
    assert rows["client2"]["engine"] == "miredo" and rows["client1"]["engine"] == "teredo-engine"
    assert rows["client2"]["address"].startswith("2001:0:cb00:710a:")
    assert rows["client2"]["mapped"].split(":")[0] == lab.spec.nat2_wan
    assert rows["client2"]["source"].startswith("kernel")
    assert rows["server"]["bound"] == ["203.0.113.10:3544", "203.0.113.11:3544"]
    ping = lab.exec("cli2", ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "3",
                             lab.spec.v6_host], timeout=30)
    assert ping.returncode == 0, ping.stdout
    res = {r["name"]: r for r in ctl.json("reload", "client2")["results"]}
    assert res["client2"]["action"] == "signalled"
    assert "miredo re-creates the tunnel on HUP" in res["client2"]["detail"]
    ctl.wait(lambda: "Reloading configuration" in ctl.log("client2"), "miredo reload", 10)
    ctl.run("wait")
    down = {r["name"]: r["action"] for r in ctl.json("down")["results"]}
    assert down["supervisord"] == "stopped"
    assert not _leftovers(lab)


def test_cli_errors_and_exit_codes(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    proc = ctl.run("status", expect=4)
    assert f"looked for unix://{ctl.state}/supervisor.sock" in proc.stderr
    proc = ctl.run("restart", "relay-eu", expect=4)
    assert proc.stderr.strip() == ("miredoctl: unknown instance 'relay-eu'; known: client1, "
                                   "client2, relay, server")
    ctl.run("reload", expect=2)
    ctl.run("frobnicate", expect=2)
    proc = ctl.run("reload", "--all", expect=4)
    assert "supervisord for this fleet is not running" in proc.stderr
    proc = ctl.run("up", "--fleet", str(ctl.fleet / "nope"), expect=1)
    assert "fleet folder not found" in proc.stderr


def test_up_recovers_engines_orphaned_by_a_killed_supervisord(lab: NetnsLab, ctl_factory) -> None:
    ctl = ctl_factory()
    ctl.run("up")
    ctl.run("wait")
    old = ctl.pids()
    os.kill(int((ctl.state / "supervisord.pid").read_text()), signal.SIGKILL)
    ctl.wait(lambda: ctl.run("status", expect=None).returncode == 4, "supervisord gone")
    assert all(Path(f"/proc/{pid}").exists() for pid in old.values())  # orphans still run
    res = ctl.json("up")["results"]
    stale = sorted(r["name"] for r in res if r["action"] == "stale engine stopped")
    assert stale == ["client1", "client2", "relay", "server"]
    assert sorted(r["name"] for r in res if r["action"] == "started") == stale
    ctl.run("wait")
    assert not set(ctl.pids().values()) & set(old.values())
