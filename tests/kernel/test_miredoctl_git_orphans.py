"""Git hygiene and orphans with a real supervisord, real engines and the lab's namespaces.

The fleet folder is its own git repository (with its own copy of the template, so edits in
the project checkout cannot change what these tests see). Switching it to a branch without
an instance file makes that instance an orphan: a whole-fleet `up` leaves it running with a
warning, `--remove-orphans` stops it. Uncommitted edits make `up` warn and `status` say so;
`up --require-clean` refuses them and leaves the fleet as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from teredolab import netns
from teredolab.topology import NetnsLab
from tests.kernel.conftest import module_lab
from tests.kernel.test_miredoctl_fleet import ENGINE_ROLES, ROOT, Ctl, make_fleet

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def gitlab() -> Iterator[NetnsLab]:
    yield from module_lab()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c",
                           "user.email=test@example.invalid", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def ctl(gitlab: NetnsLab, tmp_path: Path) -> Iterator[Ctl]:
    fleet = make_fleet(gitlab, tmp_path / "fleet")
    (fleet / "templates").mkdir()
    (fleet / "templates" / "miredo.conf.j2").write_text(
        (ROOT / "templates" / "miredo.conf.j2").read_text())
    git(fleet, "init", "-q", "-b", "main")
    git(fleet, "add", ".")
    git(fleet, "commit", "-q", "-m", "the default fleet")
    c = Ctl(gitlab, fleet, tmp_path / "state")
    try:
        yield c
    finally:
        git(fleet, "checkout", "-q", "-f", "main")  # every instance back: down stops them all
        c.run("down", "--remove-orphans", expect=None)
        pidfile = c.state / "supervisord.pid"
        if pidfile.exists():  # down failed: stop the supervisord this test started, by pid
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        left = {r: netns.pids(gitlab.ns(r)) for r in ENGINE_ROLES if netns.pids(gitlab.ns(r))}
        if left:
            netns.stop_pids([p for pids in left.values() for p in pids])
        assert not left, f"processes left in lab namespaces: {left}"


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _actions(ctl: Ctl, *args: str) -> tuple[dict[str, str], str]:
    proc = ctl.run("up", *args, "--json")
    return ({r["name"]: r["action"] for r in json.loads(proc.stdout)["results"]}, proc.stderr)


def test_dirty_tree_warns_shows_and_require_clean_refuses(ctl: Ctl) -> None:
    first = git(ctl.fleet, "rev-parse", "--short=12", "HEAD")
    actions, err = _actions(ctl, "--require-clean")
    assert set(actions.values()) == {"started"} and err == ""
    ctl.run("wait")
    rows = ctl.status()
    assert {n: (r["revision"]["fleet"], r["revision"]["fleet_dirty"],
                r["revision"]["template"], r["revision"]["template_dirty"])
            for n, r in rows.items()} == {n: (first, False, first, False) for n in rows}
    pids = ctl.pids()

    with (ctl.fleet / "client2.yaml").open("a") as fh:
        fh.write("bind_port: 40001\n")
    configs = {p.name: p.read_bytes() for p in (ctl.state / "configs").iterdir()}
    proc = ctl.run("up", "--require-clean", expect=1)
    assert proc.stderr.strip() == (
        f"miredoctl: --require-clean: the fleet folder has uncommitted edits ({ctl.fleet}); "
        "commit first; nothing was changed")
    assert ctl.pids() == pids  # refused: nothing stopped, started or rewritten
    assert {p.name: p.read_bytes() for p in (ctl.state / "configs").iterdir()} == configs

    actions, err = _actions(ctl)
    assert actions == {"client1": "unchanged", "client2": "restarted", "relay": "unchanged",
                       "server": "unchanged"}
    assert err.count("\n") == 1 and err.startswith(
        "miredoctl: warning: the fleet folder has uncommitted edits")
    ctl.run("wait")
    rows = ctl.status()
    assert rows["client2"]["revision"]["fleet"] == first
    assert rows["client2"]["revision"]["fleet_dirty"] is True
    assert rows["relay"]["revision"]["fleet_dirty"] is False  # it still runs what it ran
    table = ctl.run("status").stdout.splitlines()
    assert table[0].split()[-1] == "COMMIT"
    assert {line.split()[0]: line.split()[-1] for line in table[1:]} == {
        "client1": first, "client2": first + "+", "relay": first, "server": first}
    assert f"applied from: fleet {first} (uncommitted edits), template {first}" in \
        ctl.run("show", "client2").stdout


def test_orphans_are_kept_with_a_warning_until_removed(ctl: Ctl) -> None:
    ctl.run("up")
    ctl.run("wait")
    relay_pid = ctl.pids()["relay"]
    git(ctl.fleet, "checkout", "-q", "-b", "no-relay")
    git(ctl.fleet, "rm", "-q", "relay.yaml")
    git(ctl.fleet, "commit", "-q", "-m", "no relay here")

    actions, err = _actions(ctl)
    assert actions == {"client1": "unchanged", "client2": "unchanged", "server": "unchanged",
                       "relay": "orphan kept"}
    assert err == ("miredoctl: warning: 1 orphan(s) run but are not in the inventory: relay "
                   "(left running; `--remove-orphans` stops and removes them)\n")
    rows = ctl.status()
    assert rows["relay"]["state"] == "RUNNING" and rows["relay"]["pid"] == relay_pid
    assert rows["relay"]["role"] is None  # the inventory no longer knows it
    assert _alive(relay_pid)
    assert "keep       relay: orphan" in ctl.run("up", "--dry-run").stdout

    actions, err = _actions(ctl, "--remove-orphans")
    assert actions["relay"] == "removed" and err == ""
    ctl.wait(lambda: not _alive(relay_pid), "the orphaned relay to stop", 15)
    assert "relay" not in ctl.status()
    assert not (ctl.state / "programs" / "relay.conf").exists()

    # back on main the relay is an instance again; on no-relay `down --remove-orphans` with a
    # selection stops that selection and the orphan, nothing else
    git(ctl.fleet, "checkout", "-q", "main")
    actions, _err = _actions(ctl)
    assert actions["relay"] == "started"
    ctl.run("wait")
    pids = ctl.pids()
    git(ctl.fleet, "checkout", "-q", "no-relay")
    res = {r["name"]: r["action"] for r in
           ctl.json("down", "--remove-orphans", "client1")["results"]}
    assert res == {"client1": "stopped", "relay": "removed"}
    ctl.wait(lambda: not _alive(pids["relay"]), "the orphaned relay to stop", 15)
    rows = ctl.status()
    assert "relay" not in rows and rows["client1"]["state"] == "STOPPED"
    assert rows["server"]["pid"] == pids["server"] and rows["client2"]["pid"] == pids["client2"]
