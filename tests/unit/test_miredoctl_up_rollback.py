"""Issue 10, item 2: a failed `up` leaves the state folder byte for byte as it was.

supervisord is replaced by a stand-in whose re-read (or start) fails, so the failure happens
exactly where a real CANT_REREAD happens; supervisord's own parser (`ServerOptions`) still judges
the files. tests/kernel/test_miredoctl_faults.py does the same against a real supervisord.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from miredoctl import ops, render
from miredoctl.errors import MiredoctlError
from miredoctl.render import render_fleet, supervisord_conf
from miredoctl.state import StatePaths
from miredoctl.supervisord import identifier_for

FILES = {
    "defaults.yaml": "allow_documentation_addresses: true\n",
    "c1.yaml": "role: client\nserver: 203.0.113.10\n",
    "r1.yaml": "role: relay\nbind_port: 4000\ninterface: teredo1\n",
}


class FakeSupervisord:
    """Says every instance runs; its re-read or start fails like supervisord's would."""

    def __init__(self, running: bool, fail: str) -> None:
        self._running, self.fail, self.calls = running, fail, []

    def __call__(self, paths: StatePaths) -> FakeSupervisord:
        return self

    def running(self) -> bool:
        return self._running

    def processes(self) -> dict[str, dict[str, Any]]:
        return {name: {"name": name, "state": 20, "statename": "RUNNING", "pid": 1000 + i}
                for i, name in enumerate(("c1", "r1"))}

    def reread(self) -> Any:
        self.calls.append("reread")
        if self.fail == "reread":
            raise MiredoctlError("supervisord cannot read its configuration: CANT_REREAD: "
                                 "line 1\nline 2")
        raise AssertionError("the files should have been refused before the re-read")

    def start_daemon(self) -> None:
        self.calls.append("start_daemon")
        raise MiredoctlError("supervisord did not start: boom")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} must not be called after a failed re-read")


def _setup(tmp_path: Path) -> tuple[ops.Context, dict[Path, bytes]]:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name, text in FILES.items():
        (fleet / name).write_text(text)
    ctx = ops.Context(fleet, StatePaths(tmp_path / "state"))
    ctx.paths.ensure()
    # what a previous good `up` left: the files of the running fleet, plus a stale program
    for name, r in render_fleet(ctx.load(), ctx.paths).items():
        ctx.paths.config(name).write_text(r.text)
        ctx.paths.program(name).write_text(r.program)
    ctx.paths.supervisord_conf.write_text(supervisord_conf(ctx.paths,
                                                           identifier_for(ctx.paths)) + "; old\n")
    ctx.paths.program("gone").write_text("[program:gone]\ncommand=/bin/true\n")
    return ctx, _snapshot(ctx.paths)


def _snapshot(paths: StatePaths) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(paths.root.rglob("*")) if p.is_file()
            and p.name != "lock"}


def _change_inventory(ctx: ops.Context) -> None:
    (ctx.fleet_dir / "r1.yaml").write_text(FILES["r1.yaml"] + "mtu: 1400\n")
    (ctx.fleet_dir / "c2.yaml").write_text("role: client\nserver: 203.0.113.10\n"
                                           "interface: teredo2\n")


@pytest.fixture(autouse=True)
def _no_prerequisites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "check_start_prerequisites", lambda fleet, names: None)


@pytest.mark.parametrize("whole_fleet", [True, False])
def test_a_failed_reread_restores_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             whole_fleet: bool) -> None:
    ctx, before = _setup(tmp_path)
    _change_inventory(ctx)
    fake = FakeSupervisord(running=True, fail="reread")
    monkeypatch.setattr(ops, "SupervisordClient", fake)
    names = ["c1", "c2", "r1"]
    with pytest.raises(MiredoctlError) as exc:
        ops.up(ctx, names, whole_fleet=whole_fleet, explicit=not whole_fleet)
    assert fake.calls == ["reread"]
    assert "every file this `up` wrote was restored" in str(exc.value)
    assert _snapshot(ctx.paths) == before
    # the next good `up` (inventory put back) sees nothing to do
    (ctx.fleet_dir / "r1.yaml").write_text(FILES["r1.yaml"])
    (ctx.fleet_dir / "c2.yaml").unlink()
    _fleet, rendered = ops.validate(ctx, checkconf=False)
    plans = ops.plan_up(ctx, rendered, ["c1", "r1"], fake.processes())
    assert [p.action for p in plans] == ["unchanged", "unchanged"]


def test_supervisords_parser_refuses_before_the_reread(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A program section supervisord would refuse (here: a broken process setting) is found by
    supervisord's own parser before the daemon re-reads anything; nothing stays on disk."""
    ctx, before = _setup(tmp_path)
    _change_inventory(ctx)
    monkeypatch.setitem(render.PROGRAM_SETTINGS, "startsecs", "soon")
    fake = FakeSupervisord(running=True, fail="never")
    monkeypatch.setattr(ops, "SupervisordClient", fake)
    with pytest.raises(MiredoctlError) as exc:
        ops.up(ctx, ["c1", "c2", "r1"], whole_fleet=True, explicit=False)
    assert fake.calls == []
    assert str(exc.value).startswith("supervisord's parser rejects the new configuration: ")
    assert "\n" not in str(exc.value)
    assert _snapshot(ctx.paths) == before


def test_a_failed_start_of_supervisord_restores_the_stale_programs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, before = _setup(tmp_path)
    _change_inventory(ctx)
    fake = FakeSupervisord(running=False, fail="start")
    monkeypatch.setattr(ops, "SupervisordClient", fake)
    with pytest.raises(MiredoctlError) as exc:
        ops.up(ctx, ["c1", "c2", "r1"], whole_fleet=True, explicit=False)
    assert fake.calls == ["start_daemon"]
    assert "restored" in str(exc.value)
    assert _snapshot(ctx.paths) == before


def test_ctrl_c_during_up_restores_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, before = _setup(tmp_path)
    _change_inventory(ctx)
    fake = FakeSupervisord(running=True, fail="never")

    def interrupted() -> None:
        raise KeyboardInterrupt

    fake.reread = interrupted  # type: ignore[method-assign]
    monkeypatch.setattr(ops, "SupervisordClient", fake)
    with pytest.raises(KeyboardInterrupt):
        ops.up(ctx, ["c1", "c2", "r1"], whole_fleet=True, explicit=False)
    assert _snapshot(ctx.paths) == before
