"""miredoctl with many relays in one namespace (issue 14): no supervisord event lost during the
start-up burst and `down --all`, and the shared Teredo prefix route survives relays stopping.

The relays share one network namespace of their own (loopback only: a relay needs no peer to
start, bind and route), each with its interface `trlyN` and UDP port, as `bench.fleet` builds
them. Nothing here asserts a time.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fleet import lost_event_lines, make_relay_fleet
from miredoctl.listeners import history
from teredolab import netns
from tests.kernel.conftest import _missing_tools, unique_prefix
from tests.kernel.test_miredoctl_fleet import Ctl

pytestmark = pytest.mark.kernel

BURST = 60  # relays started and stopped together: well above the old listener buffer of 100
PREFIX = "2001::/32"  # events for 60 engines' start and stop


@pytest.fixture
def relay_ns() -> Iterator[str]:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    name = unique_prefix() + "relays"
    netns.add(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        left = netns.pids(name)
        if left:
            netns.stop_pids(left)
        netns.delete(name)


@pytest.fixture
def fleet_of(relay_ns: str, tmp_path: Path) -> Iterator:
    made: list[Ctl] = []

    def make(count: int) -> Ctl:
        folder = make_relay_fleet(tmp_path / f"fleet{len(made)}", count, relay_ns)
        ctl = Ctl(None, folder, tmp_path / f"state{len(made)}")  # type: ignore[arg-type]
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        ctl.run("down", "--all", expect=None, timeout=600)
        pidfile = ctl.state / "supervisord.pid"
        if pidfile.exists():  # down failed: stop the supervisord this test started, by pid
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    assert not netns.pids(relay_ns), "engines left in the namespace after down"


def prefix_routes(ns: str) -> dict[str, int]:
    """The namespace's routes to the Teredo prefix: interface -> metric."""
    out = subprocess.run(["ip", "-n", ns, "-j", "-6", "route", "show", PREFIX],
                         capture_output=True, text=True, check=True).stdout
    return {r["dev"]: r.get("metric") for r in json.loads(out or "[]")}


def broken_histories(ctl: Ctl, names: list[str]) -> dict[str, list[str]]:
    """Instances whose history is not one unbroken chain from an operator's start to STOPPED.

    Every record names the state it left (`from`); a lost event shows as a record whose `from`
    is not the previous record's state, or as a missing first or last record."""
    bad = {}
    for name in names:
        trs = history.load(ctl.state / "history" / f"{name}.jsonl")
        chain = [f"{t.from_state}->{t.state}" for t in trs]
        ok = (len(trs) >= 4 and trs[0].state == "STARTING" and trs[0].from_state == "STOPPED"
              and trs[-1].state == "STOPPED" and "RUNNING" in {t.state for t in trs}
              and all(b.from_state == a.state for a, b in itertools.pairwise(trs)))
        if not ok:
            bad[name] = chain
    return bad


def test_prefix_route_survives_any_relay_stopping(relay_ns: str, fleet_of) -> None:
    ctl = fleet_of(3)
    ctl.run("up", "--all")
    ctl.run("wait", "--timeout", "60")
    routes = prefix_routes(relay_ns)
    assert set(routes) == {"trly0", "trly1", "trly2"}, routes
    assert len(set(routes.values())) == 3 and min(routes.values()) == 1024, routes
    for i, name in enumerate(("r000", "r001", "r002")):
        ctl.run("down", name)
        left = prefix_routes(relay_ns)
        assert f"trly{i}" not in left and len(left) == 2, (name, left)
        ctl.run("up", name)
        ctl.run("wait", name, "--timeout", "60")
        assert len(prefix_routes(relay_ns)) == 3
    ctl.run("down", "r000", "r001")
    assert list(prefix_routes(relay_ns)) == ["trly2"]  # the last relay still routes
    ctl.run("down", "--all")
    assert prefix_routes(relay_ns) == {}


def test_no_event_lost_in_a_burst_of_relays(relay_ns: str, fleet_of) -> None:
    ctl = fleet_of(BURST)
    names = [f"r{i:03d}" for i in range(BURST)]
    res = ctl.json("up", "--all")["results"]
    assert sorted(r["name"] for r in res if r["action"] == "started") == names
    ctl.run("wait", "--timeout", "600", timeout=900)
    status = ctl.json("status")
    assert status["supervisord"]["lost_events"] == {}
    assert all(r["state"] == "RUNNING" for r in status["instances"])
    assert len(prefix_routes(relay_ns)) == BURST
    ctl.run("down", "r000")  # the relay whose route was the first (metric 1024)
    assert "trly0" not in prefix_routes(relay_ns) and len(prefix_routes(relay_ns)) == BURST - 1
    assert lost_event_lines(ctl.state) == 0
    ctl.run("down", "--all", timeout=600)
    assert lost_event_lines(ctl.state) == 0  # supervisord's log of the whole run
    assert broken_histories(ctl, names) == {}
    assert prefix_routes(relay_ns) == {}
