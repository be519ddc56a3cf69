"""miredoctl at fleet scale (issue 14): costs that grew with the number of instances."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from miredoctl import ops
from miredoctl.inventory import load_fleet
from miredoctl.render import render_fleet
from miredoctl.state import StatePaths

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
