"""Fleet identity, the three-folder layout, the move from the hash-named folder, the host's
fleet records (`ls`) and the cross-fleet clash rule (miredoctl/fleets.py)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miredoctl import cli, fleets, service
from miredoctl.errors import MiredoctlError, UsageError
from miredoctl.inventory import load_fleet
from miredoctl.listeners import history
from miredoctl.render import supervisord_conf
from miredoctl.state import StatePaths, fleet_hash, fleet_processes, identify

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every host-wide folder under tmp_path: nothing reaches /run, /var/lib or /var/log."""
    for var, sub in (("MIREDOCTL_RUN_BASE", "run"), ("MIREDOCTL_LIB_BASE", "lib"),
                     ("MIREDOCTL_LOG_BASE", "log")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("MIREDOCTL_STATE", "MIREDOCTL_PROJECT", "MIREDOCTL_RUN_DIR",
                "MIREDOCTL_LIB_DIR", "MIREDOCTL_LOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _fleet(where: Path, name: str | None = None) -> Path:
    """A copy of the shipped demo fleet, optionally with `name:` in defaults.yaml."""
    where.mkdir(parents=True)
    for src in (ROOT / "instances").glob("*.yaml"):
        (where / src.name).write_text(src.read_text())
    if name is not None:
        with (where / "defaults.yaml").open("a") as fh:
            fh.write(f"name: {name}\n")
    return where


@pytest.mark.parametrize("good", ["edge", "e", "edge-2_b", "0fleet", "a" * 64])
def test_good_names(good: str) -> None:
    assert fleets.name_problem(good) is None


@pytest.mark.parametrize("bad", ["", "Edge", "-edge", "_edge", "ed ge", "ed/ge", "a" * 65, 7,
                                 None, "édge"])
def test_bad_names(bad: object) -> None:
    assert "fleet name must be" in (fleets.name_problem(bad) or "")


def test_derived_name_is_the_repository_and_the_path_in_it(tmp_path: Path) -> None:
    repo = tmp_path / "Edge.Repo"
    (repo / ".git").mkdir(parents=True)
    assert fleets.derived_name(repo) == "edge-repo"
    assert fleets.derived_name(repo / "fleets" / "Paris") == "edge-repo-fleets-paris"
    plain = tmp_path / "plain" / "my fleet"
    plain.mkdir(parents=True)
    assert fleets.derived_name(plain) == "my-fleet"
    assert fleets.derived_name(tmp_path / "plain" / "___") == "fleet"


def test_name_in_defaults_wins_and_a_disagreeing_project_is_refused(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "f", "edge")
    assert fleets.fleet_name(fleet, None) == "edge"
    assert fleets.fleet_name(fleet, "edge") == "edge"
    with pytest.raises(UsageError, match=r"--project other but .*defaults.yaml:\d+ names this "
                                         r"fleet 'edge'"):
        fleets.fleet_name(fleet, "other")
    plain = _fleet(tmp_path / "g")
    assert fleets.fleet_name(plain, "given") == "given"
    with pytest.raises(UsageError, match="--project: the fleet name must be"):
        fleets.fleet_name(plain, "Bad Name")


def test_bad_name_in_defaults_names_file_and_line(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "f", "Bad_Name")
    lines = (fleet / "defaults.yaml").read_text().splitlines()
    with pytest.raises(UsageError) as exc:
        fleets.fleet_name(fleet, None)
    assert str(exc.value).startswith(f"{fleet / 'defaults.yaml'}:{len(lines)}: the fleet name")
    # the inventory reports it too, at the same line
    problems = load_fleet_problems(fleet)
    assert any(f"defaults.yaml:{len(lines)}: the fleet name must be" in p for p in problems)


def load_fleet_problems(fleet: Path) -> list[str]:
    from miredoctl.errors import InventoryError
    try:
        load_fleet(fleet)
    except InventoryError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_good_name_is_a_valid_inventory_key(tmp_path: Path) -> None:
    assert load_fleet_problems(_fleet(tmp_path / "f", "edge")) == []


def test_name_survives_a_defaults_file_yaml_cannot_parse(tmp_path: Path) -> None:
    """`down` of a fleet whose defaults.yaml is mid-edit must still find its folders."""
    fleet = _fleet(tmp_path / "f", "edge")
    with (fleet / "defaults.yaml").open("a") as fh:
        fh.write("roles: [unclosed\n")
    assert fleets.fleet_name(fleet, None) == "edge"


def test_layout_by_name_and_each_folder_overridable(bases: Path) -> None:
    fleet = _fleet(bases / "f", "edge")
    paths = fleets.fleet_paths(fleet)
    assert (paths.root, paths.lib_root, paths.logs) == (
        bases / "run" / "edge", bases / "lib" / "edge", bases / "log" / "edge")
    assert paths.socket.parent == paths.run.parent == bases / "run" / "edge"
    assert paths.supervisord_pid.parent == bases / "run" / "edge"
    assert paths.config("c1").parent.parent == paths.histories.parent == bases / "lib" / "edge"
    assert paths.supervisord_conf.parent == paths.record.parent == bases / "lib" / "edge"
    assert paths.log("c1").parent == bases / "log" / "edge"
    assert paths.timed_log("c1").parent == bases / "log" / "edge" / "timed"
    assert paths.cli_args() == ["--run-dir", str(paths.root), "--lib-dir", str(paths.lib_root),
                                "--log-dir", str(paths.logs)]
    moved = fleets.fleet_paths(fleet, lib_dir=str(bases / "L"))
    assert (moved.root, moved.lib_root) == (paths.root, bases / "L")
    single = fleets.fleet_paths(fleet, state_dir=str(bases / "S"))
    assert single.single and single.configs == bases / "S" / "configs"
    assert single.logs == bases / "S" / "logs" and single.cli_args() == ["--state-dir",
                                                                           str(bases / "S")]


def test_cli_and_environment_pick_the_folders(bases: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = _fleet(bases / "f")
    args = cli.build_parser().parse_args(["--fleet", str(fleet), "--project", "p1", "status"])
    assert cli._context(args).paths.root == bases / "run" / "p1"
    monkeypatch.setenv("MIREDOCTL_PROJECT", "p2")
    monkeypatch.setenv("MIREDOCTL_LOG_DIR", str(bases / "logs-here"))
    args = cli.build_parser().parse_args(["--fleet", str(fleet), "status"])
    paths = cli._context(args).paths
    assert (paths.root, paths.logs, paths.name) == (bases / "run" / "p2", bases / "logs-here",
                                                    "p2")


def test_engines_and_helpers_are_recognised_in_the_split_layout(bases: Path) -> None:
    paths = fleets.fleet_paths(_fleet(bases / "f", "edge"))
    engine = ["teredo-engine", "-f", "-c", str(paths.config("c1")), "-p", str(paths.pidfile("c1"))]
    assert identify(paths, engine) == "c1"
    assert identify(paths, ["x", "-c", str(paths.root / "configs" / "c1.conf"), "-p",
                            str(paths.pidfile("c1"))]) is None
    assert identify(paths, ["python", "-m", "miredoctl.cli", "exporter", *paths.cli_args()]) \
        == "_exporter"
    assert identify(paths, ["python", "-m", "miredoctl.listeners.reaper", "--history",
                            str(paths.histories)]) == "_reaper"
    assert identify(paths, ["python", "-m", "miredoctl.listeners.logstamp", "--logs",
                            str(paths.timed_logs)]) == "_logstamp"
    # the health listener too: a dead supervisord's healer must be found and stopped
    assert identify(paths, ["python", "-m", "miredoctl.listeners.health", "--history",
                            str(paths.histories), "--socket", str(paths.socket)]) == "_healer"


def test_old_hash_folder_moves_histories_and_logs_when_nothing_runs(bases: Path) -> None:
    fleet = _fleet(bases / "f", "edge")
    old = StatePaths(bases / "run" / fleet_hash(fleet))
    old.ensure()
    old.history("c1").write_text('{"t": 1, "state": "RUNNING"}\n')
    old.log("c1").write_text("old line\n")
    old.timed_log("c1").write_text("2026-01-01 old timed\n")
    new = fleets.fleet_paths(fleet, adopt=False)
    new.ensure()
    new.log("c1").write_text("new line\n")  # both have it: older lines first
    paths = fleets.fleet_paths(fleet)
    assert paths == new
    assert paths.history("c1").read_text() == '{"t": 1, "state": "RUNNING"}\n'
    assert paths.log("c1").read_text() == "old line\nnew line\n"
    assert paths.timed_log("c1").read_text() == "2026-01-01 old timed\n"
    assert not old.root.exists()


def test_explicit_folders_never_touch_the_old_one(bases: Path) -> None:
    fleet = _fleet(bases / "f", "edge")
    old = StatePaths(bases / "run" / fleet_hash(fleet))
    old.ensure()
    fleets.fleet_paths(fleet, run_dir=str(bases / "elsewhere"))
    fleets.fleet_paths(fleet, state_dir=str(bases / "S"))
    assert old.root.is_dir()


def _claims(netns: str | None, interface: str | None, *endpoints: tuple[str, int]) -> dict:
    return {"netns": netns, "interface": interface, "endpoints": [list(e) for e in endpoints]}


def test_clashes_in_the_same_namespace_only() -> None:
    other = {"name": "blue", "folder": "/srv/blue",
             "instances": {"c": _claims("ns1", "teredo"),
                           "r": _claims("ns1", "teredo-r", ("0.0.0.0", 3545)),
                           "s": _claims(None, None, ("192.0.2.1", 3544), ("192.0.2.2", 3544)),
                           "idle": _claims("ns2", "teredo")}}
    running = {"c", "r", "s"}
    mine = {"a": _claims("ns1", "teredo"),                      # same interface, same netns
            "b": _claims("ns3", "teredo"),                      # another namespace
            "d": _claims("ns2", "teredo"),                      # the other one is not running
            "e": _claims("ns1", "teredo-e", ("198.51.100.7", 3545)),  # their 0.0.0.0:3545
            "f": _claims(None, None, ("192.0.2.2", 3544)),      # their secondary address
            "g": _claims(None, None, ("192.0.2.3", 3544))}      # another address
    lines = fleets.clashes(mine, [(other, running)])
    assert lines == [
        "instance a: interface 'teredo' in netns ns1 is held by instance c of fleet 'blue' "
        "(/srv/blue), which is running",
        "instance e: UDP 198.51.100.7:3545 in netns ns1 (theirs 0.0.0.0:3545) is held by "
        "instance r of fleet 'blue' (/srv/blue), which is running",
        "instance f: UDP 192.0.2.2:3544 in the host namespace (theirs 192.0.2.2:3544) is held "
        "by instance s of fleet 'blue' (/srv/blue), which is running"]


def test_claims_come_from_the_inventory(tmp_path: Path) -> None:
    fleet = load_fleet(_fleet(tmp_path / "f"))
    relay = fleets.claims(fleet.instances["relay"])
    server = fleets.claims(fleet.instances["server"])
    assert relay["interface"] == "teredo" and relay["netns"] == fleet.instances["relay"].netns
    assert server["interface"] is None
    assert [e[1] for e in server["endpoints"]] == [3544, 3544]


def test_record_and_ls(bases: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet_dir = _fleet(bases / "f", "edge")
    fleet = load_fleet(fleet_dir)
    paths = fleets.fleet_paths(fleet_dir)
    paths.ensure()
    text = fleets.before_up(fleet_dir, paths, fleet, [], fleet.names)
    paths.record.write_text(text)
    rec = json.loads(text)
    assert rec["name"] == "edge" and rec["folder"] == str(fleet_dir.resolve())
    assert set(rec["instances"]) == set(fleet.names)
    legacy = bases / "run" / "0123456789ab"  # an old hash folder nobody adopted
    (legacy / "programs").mkdir(parents=True)
    (legacy / "programs" / "x.conf").write_text("")
    rows = fleets.list_fleets()
    assert [(r.name, r.state, r.running, r.total, r.folder) for r in rows] == [
        ("0123456789ab", "stopped", 0, 1, "?"),
        ("edge", "stopped", 0, len(fleet.names), str(fleet_dir.resolve()))]
    assert cli.main(["ls", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["0123456789ab", "edge"]
    assert data[1]["lib_dir"] == str(bases / "lib" / "edge")
    assert cli.main(["ls"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "STATE", "INSTANCES", "FOLDER"]
    assert table[2].split() == ["edge", "stopped", f"0/{len(fleet.names)}",
                                str(fleet_dir.resolve())]


def test_history_counts_carry_over_a_reboot() -> None:
    """A new supervisord's STARTING (from STOPPED) after an unrecorded end (RUNNING last) is
    not an operator start: the count carries over. After a recorded stop it resets."""
    def tr(t: float, state: str, frm: str) -> history.Transition:
        return history.Transition(1e9 + t, state, frm, None, None)

    seq = [tr(0, "STARTING", "STOPPED"), tr(1, "RUNNING", "STARTING"),
           tr(5, "EXITED", "RUNNING"), tr(5, "STARTING", "EXITED"), tr(6, "RUNNING", "STARTING")]
    assert history.summarize(seq, 1e9 + 7).restarts == 1
    seq += [tr(100, "STARTING", "STOPPED"), tr(101, "RUNNING", "STARTING")]  # the reboot
    assert history.summarize(seq, 1e9 + 102).restarts == 1
    seq += [tr(110, "STOPPING", "RUNNING"), tr(111, "STOPPED", "STOPPING"),
            tr(112, "STARTING", "STOPPED")]
    assert history.summarize(seq, 1e9 + 113).restarts == 0


def _fake_engine(paths: StatePaths, name: str) -> subprocess.Popen:
    """A process whose command line is an engine of `paths` (what `fleet_processes` looks
    for: `-c configs/NAME.conf -p run/NAME.pid`), without being one."""
    paths.ensure()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "-c", str(paths.config(name)), "-p", str(paths.pidfile(name))])
    deadline = time.monotonic() + 10
    while name not in fleet_processes(paths):  # until its command line is readable
        assert time.monotonic() < deadline, "fake engine never showed up in /proc"
        time.sleep(0.05)
    return proc


def test_a_second_clone_may_not_start_the_fleet_the_first_runs(bases: Path) -> None:
    first, second = _fleet(bases / "a", "edge"), _fleet(bases / "b", "edge")
    fleet_a, fleet_b = load_fleet(first), load_fleet(second)
    paths_a, paths_b = fleets.fleet_paths(first), fleets.fleet_paths(second)
    assert paths_a == paths_b  # one name, one fleet
    paths_a.ensure()
    paths_a.record.write_text(fleets.before_up(first, paths_a, fleet_a, [], fleet_a.names))
    engine = _fake_engine(paths_a, "client1")
    try:
        with pytest.raises(MiredoctlError) as exc:
            fleets.before_up(second, paths_b, fleet_b, ["client1"], fleet_b.names)
        assert str(exc.value).startswith(
            f"fleet 'edge' is running from {first.resolve()} (this is {second.resolve()}): "
            "run `miredoctl down --all` there first")
        # the first clone itself goes on; ls sees the fleet running one engine of four
        fleets.before_up(first, paths_a, fleet_a, ["client2"], fleet_a.names)
        assert [(r.name, r.state, r.running, r.total) for r in fleets.list_fleets()] == \
            [("edge", "running", 1, len(fleet_a.names))]
    finally:
        engine.kill()
        engine.wait()
    # stopped there: the other clone takes the fleet over
    text = fleets.before_up(second, paths_b, fleet_b, ["client1"], fleet_b.names)
    assert json.loads(text)["folder"] == str(second.resolve())


def test_the_exporter_program_gets_the_same_three_folders(bases: Path) -> None:
    """supervisord runs `miredoctl exporter` with the fleet's folders on its command line: it
    must read the same socket, histories and logs as the `up` that wrote it."""
    fleet_dir = _fleet(bases / "f", "edge")
    paths = fleets.fleet_paths(fleet_dir, lib_dir=str(bases / "elsewhere"))
    conf = supervisord_conf(paths, "id", "127.0.0.1:9531", fleet_dir, 4)
    section = conf.split("[program:_exporter]", 1)[1]
    command = next(ln for ln in section.splitlines() if ln.startswith("command="))
    argv = shlex.split(command.partition("=")[2])
    assert identify(paths, argv) == "_exporter"
    cli_args = argv[argv.index("miredoctl.cli") + 1:]
    got = cli._context(cli.build_parser().parse_args(cli_args)).paths
    assert (got.root, got.lib_root, got.logs, got.name) == \
        (paths.root, bases / "elsewhere", paths.logs, "edge")


def test_an_old_folder_that_cannot_be_moved_is_still_used(bases: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A command without write access (a member of the readers' group) must still find the
    fleet: it goes on reading the old folder, and the next command that can moves it."""
    fleet = _fleet(bases / "f", "edge")
    old = StatePaths(bases / "run" / fleet_hash(fleet))
    old.ensure()
    old.history("c1").write_text('{"t": 1, "state": "RUNNING"}\n')

    def refused(src: Path, dest: Path) -> None:
        raise PermissionError(13, "Permission denied", str(dest))

    with monkeypatch.context() as patched:
        patched.setattr(fleets, "_move_tree", refused)
        assert fleets.fleet_paths(fleet).root == old.root
        assert old.history("c1").exists()
    assert fleets.fleet_paths(fleet).root == bases / "run" / "edge"
    assert not old.root.exists()


def test_the_unit_of_a_fleet_still_in_the_old_folder_names_the_new_ones(bases: Path) -> None:
    """After the reboot the unit is for, the old folder is gone: the unit must not name it."""
    fleet = _fleet(bases / "f", "edge")
    old = StatePaths(bases / "run" / fleet_hash(fleet))
    engine = _fake_engine(old, "client1")
    try:
        paths = fleets.fleet_paths(fleet)
        assert paths.root == old.root  # adopted while it runs
        text = service.render_unit(fleet, paths)
    finally:
        engine.kill()
        engine.wait()
    assert f"PIDFile={bases / 'run' / 'edge' / 'supervisord.pid'}" in text.splitlines()
    assert str(old.root) not in text and "--state-dir" not in text


def test_a_bad_name_stops_nothing_when_the_state_folder_is_given(bases: Path) -> None:
    fleet = _fleet(bases / "f", "Bad Name")
    assert fleets.fleet_paths(fleet, state_dir=str(bases / "S")).root == bases / "S"
    with pytest.raises(UsageError, match=r"defaults\.yaml:\d+: the fleet name must be"):
        fleets.fleet_paths(fleet)
