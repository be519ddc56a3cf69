"""miredoctl at fleet scale (issue 14): costs that grew with the number of instances."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from supervisor.states import ProcessStates
from supervisor.xmlrpc import Faults

from miredoctl import ops
from miredoctl.inventory import load_fleet
from miredoctl.render import fleet_limits, render_fleet, supervisord_conf
from miredoctl.state import StatePaths
from miredoctl.supervisord import (
    SupervisordClient,
    identifier_for,
    lost_events,
    parsed_groups,
    up_deadline,
)

ROOT = Path(__file__).resolve().parents[2]


def test_engine_check_is_one_process_and_blames_each_instance(tmp_path: Path,
                                                              monkeypatch) -> None:
    rendered = render_fleet(load_fleet(ROOT / "instances"), StatePaths(tmp_path / "state"))
    rendered["relay"] = dataclasses.replace(rendered["relay"],
                                            body="RelayType cone\nBindPort 70000\n")
    rendered["client2"] = dataclasses.replace(rendered["client2"],
                                              body="RelayType client\nFrobnicate 1\n")
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(argv, *args, **kwargs):
        calls.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(ops.subprocess, "run", counting_run)
    problems = ops.engine_check_problems(rendered, tmp_path)
    assert len(calls) == 1 and calls[0].count("--check") == 1
    assert len([a for a in calls[0] if a.endswith(".engine.conf")]) == len(rendered)
    got = {Path(p.file).name: p.message for p in problems}
    assert set(got) == {"relay.yaml", "client2.yaml"}
    assert got["relay.yaml"].startswith("teredo-engine --check rejects the rendered config: "
                                        "relay.conf:")
    assert "BindPort" in got["relay.yaml"] and "Frobnicate" not in got["relay.yaml"]
    assert "Frobnicate" in got["client2.yaml"]


@pytest.mark.parametrize("count", [0, 3])
def test_engine_check_of_a_clean_fleet(tmp_path: Path, count: int) -> None:
    rendered = render_fleet(load_fleet(ROOT / "instances"), StatePaths(tmp_path / "state"))
    chosen = dict(list(rendered.items())[:count])
    assert ops.engine_check_problems(chosen, tmp_path) == []


def test_context_loads_the_inventory_again_only_after_a_change(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for src in (ROOT / "instances").glob("*.yaml"):
        (fleet / src.name).write_text(src.read_text())
    ctx = ops.Context(fleet, StatePaths(tmp_path / "state"))
    first = ctx.load()
    assert ctx.load() is first
    with (fleet / "relay.yaml").open("a") as fh:
        fh.write("mtu: 1400\n")
    second = ctx.load()
    assert second is not first and second.instances["relay"].values["mtu"] == 1400
    (fleet / "client2.yaml").unlink()
    assert "client2" not in ctx.load().instances


# --- supervisord sized from the fleet ------------------------------------------------------

def test_fleet_limits_grow_with_the_fleet_in_powers_of_two() -> None:
    small = fleet_limits(4)
    assert (small.minfds, small.minprocs) == (1024, 200)  # supervisord's own defaults
    assert small.reaper_buffer >= 1024 and small.logstamp_buffer >= 1024
    for n in (100, 300, 500):
        lim = fleet_limits(n)
        assert lim.minfds >= 16 * n and lim.minprocs >= 8 * n
        assert lim.reaper_buffer >= 16 * n and lim.logstamp_buffer >= 32 * n
        for value in (lim.minfds, lim.minprocs, lim.reaper_buffer, lim.logstamp_buffer):
            assert value in (200, 1024) or value & (value - 1) == 0
    assert fleet_limits(100) == fleet_limits(110)  # a few more instances rewrite nothing


def test_supervisord_conf_carries_the_limits(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    conf = supervisord_conf(paths, identifier_for(paths), instances=300).splitlines()
    lim = fleet_limits(300)
    assert f"minfds={lim.minfds}" in conf and f"minprocs={lim.minprocs}" in conf
    assert conf.count(f"buffer_size={lim.reaper_buffer}") == 2  # _reaper and _healer
    assert conf.count(f"buffer_size={lim.logstamp_buffer}") == 1
    assert parsed_groups(_write_conf(paths, conf)) == ["_healer", "_logstamp", "_reaper"]


def _write_conf(paths: StatePaths, lines: list[str]) -> Path:
    paths.ensure()
    paths.supervisord_conf.write_text("\n".join(lines))
    return paths.supervisord_conf


def test_up_waits_longer_for_a_bigger_fleet() -> None:
    assert up_deadline(1) >= 60
    assert up_deadline(300) >= up_deadline(100) + 100


def test_lost_events_counts_overflows_since_the_last_start(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    assert lost_events(paths) == {}  # no log yet
    paths.logs.mkdir(parents=True)
    paths.supervisord_log.write_text(
        "2026-12-02 07:00:00,000 INFO supervisord started with pid 10\n"
        "2026-12-02 07:00:01,000 ERRO pool _reaper event buffer overflowed, discarding event 0\n"
        "2026-12-02 07:10:00,000 INFO supervisord started with pid 20\n"
        "2026-12-02 07:10:01,000 INFO spawned: 'r1' with pid 21\n")
    assert lost_events(paths) == {}
    with paths.supervisord_log.open("a") as fh:
        for serial in range(3):
            fh.write(f"2026-12-02 07:10:02,000 ERRO pool _reaper event buffer overflowed, "
                     f"discarding event {serial}\n")
        fh.write("2026-12-02 07:10:02,500 ERRO pool _logstamp event buffer overflowed, "
                 "discarding event 9\n")
    assert lost_events(paths) == {"_reaper": 3, "_logstamp": 1}


class _Multicall:
    """Stands in for supervisord's XML-RPC: records multicalls, answers like supervisord."""

    def __init__(self, infos: dict[str, int]) -> None:
        self.infos, self.calls = infos, []
        self.system = self
        self.supervisor = self

    def multicall(self, calls: list[dict]) -> list:
        self.calls.append(calls)
        out = []
        for call in calls:
            name = call["params"][0]
            if self.infos.get(name) != ProcessStates.RUNNING:
                out.append({"faultCode": Faults.NOT_RUNNING, "faultString": "NOT_RUNNING"})
            else:
                self.infos[name] = ProcessStates.STOPPING
                out.append(True)
        return out

    def getAllProcessInfo(self) -> list[dict]:
        now = [{"name": n, "state": s} for n, s in self.infos.items()]
        for n, s in self.infos.items():  # everything stopping is stopped one poll later
            if s == ProcessStates.STOPPING:
                self.infos[n] = ProcessStates.STOPPED
        return now


def test_stop_many_sends_every_stop_in_one_request(tmp_path: Path) -> None:
    sup = SupervisordClient(StatePaths(tmp_path / "state"))
    fake = _Multicall({"a": ProcessStates.RUNNING, "b": ProcessStates.STOPPED,
                       "c": ProcessStates.RUNNING})
    sup._proxy = fake
    assert sup.stop_many(["a", "b", "c", "gone"]) == {"a": True, "b": False, "c": True,
                                                       "gone": False}
    assert len(fake.calls) == 1 and [c["params"] for c in fake.calls[0]] == [
        ["a", False], ["b", False], ["c", False], ["gone", False]]
    assert set(fake.infos.values()) == {ProcessStates.STOPPED}


class _Started:
    """`subprocess.run` of supervisord, standing in: it 'daemonized' as `pid`."""

    def __init__(self, paths: StatePaths, pid: int) -> None:
        self.paths, self.pid = paths, pid

    def __call__(self, *args, **kwargs) -> subprocess.CompletedProcess:
        self.paths.supervisord_pid.write_text(f"{self.pid}\n")
        return subprocess.CompletedProcess(args, 0, "", "")


def _starting(tmp_path: Path, monkeypatch, child: list[str], answers_after: float) -> tuple:
    import sys
    import time

    from miredoctl import supervisord as sup_mod

    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    proc = subprocess.Popen([sys.executable, "-c", *child])
    monkeypatch.setattr(sup_mod.subprocess, "run", _Started(paths, proc.pid))
    monkeypatch.setattr(sup_mod, "daemon_deadline", lambda n: 2.0)
    monkeypatch.setattr(sup_mod, "daemon_hard_deadline", lambda n: 30.0)
    since = time.monotonic()
    monkeypatch.setattr(SupervisordClient, "running",
                        lambda self: time.monotonic() - since > answers_after)
    return SupervisordClient(paths), proc


def test_a_busy_starting_supervisord_is_waited_for_past_the_quiet_limit(tmp_path, monkeypatch):
    # it spends CPU (spawning hundreds of engines): answering after 4 s is fine, although 2 s
    # without an answer is the limit for a supervisord that does nothing
    client, proc = _starting(tmp_path, monkeypatch, ["while True: pass"], answers_after=4.0)
    try:
        client.start_daemon()
    finally:
        proc.kill()
        proc.wait()


def test_an_idle_silent_supervisord_is_given_up_after_the_quiet_limit(tmp_path, monkeypatch):
    from miredoctl.errors import SupervisorUnreachable

    client, proc = _starting(tmp_path, monkeypatch, ["import time; time.sleep(60)"],
                             answers_after=25.0)
    try:
        with pytest.raises(SupervisorUnreachable, match="does not answer after"):
            client.start_daemon()
    finally:
        proc.kill()
        proc.wait()


def test_a_supervisord_that_died_is_reported_at_once(tmp_path, monkeypatch):
    from miredoctl.errors import SupervisorUnreachable

    client, proc = _starting(tmp_path, monkeypatch, ["pass"], answers_after=25.0)
    proc.wait()
    with pytest.raises(SupervisorUnreachable, match=rf"pid {proc.pid}\) exited before"):
        client.start_daemon()
