"""Git hygiene without root: which commit a rendered config records, `up`'s warning about
uncommitted edits, `--require-clean`, and orphans left running or removed (a stand-in for
supervisord). tests/kernel/test_miredoctl_git_orphans.py does it with a real supervisord."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from miredoctl import cli, gitinfo, ops, orphans, status
from miredoctl.errors import MiredoctlError
from miredoctl.inventory import Fleet
from miredoctl.render import render_fleet
from miredoctl.state import StatePaths

FILES = {
    "defaults.yaml": "allow_documentation_addresses: true\n",
    "c1.yaml": "role: client\nserver: 203.0.113.10\n",
    "r1.yaml": "role: relay\nbind_port: 4000\ninterface: teredo1\n",
}
TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "miredo.conf.j2"


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c",
                           "user.email=t@example.invalid", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def make_fleet(root: Path, in_git: bool = True, own_template: bool = True) -> Path:
    fleet = root / "fleet"
    fleet.mkdir(parents=True)
    for name, text in FILES.items():
        (fleet / name).write_text(text)
    if own_template:
        (fleet / "templates").mkdir()
        (fleet / "templates" / "miredo.conf.j2").write_text(TEMPLATE.read_text())
    if in_git:
        git(root, "init", "-q")
        git(root, "add", ".")
        git(root, "commit", "-q", "-m", "fleet")
    return fleet


def test_tree_state_names_head_and_edits(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "repo")
    head = git(fleet, "rev-parse", "--short=12", "HEAD")
    assert gitinfo.tree_state(fleet) == gitinfo.TreeState(head, False)
    (fleet / "c2.yaml").write_text("role: client\n")  # untracked counts
    assert gitinfo.tree_state(fleet) == gitinfo.TreeState(head, True)
    (fleet / "c2.yaml").unlink()
    with (fleet / "r1.yaml").open("a") as fh:
        fh.write("mtu: 1400\n")
    assert gitinfo.tree_state(fleet).dirty is True
    assert gitinfo.tree_state(fleet / "c1.yaml").dirty is False  # a file: only its own edits
    outside = make_fleet(tmp_path / "plain", in_git=False)
    assert gitinfo.tree_state(outside) == gitinfo.TreeState(None, None, in_git=False)
    assert gitinfo.tree_state(outside, "abc123 (controller tree had uncommitted edits, "
                              "not shipped)") == gitinfo.TreeState("abc123", True)


def test_the_applied_record_names_the_revision_and_status_reads_it(tmp_path: Path) -> None:
    fleet_dir = make_fleet(tmp_path / "repo")
    head = git(fleet_dir, "rev-parse", "--short=12", "HEAD")
    ctx = ops.Context(fleet_dir, StatePaths(tmp_path / "state"))
    ctx.paths.ensure()
    for name, r in render_fleet(ctx.load(), ctx.paths).items():
        ctx.paths.config(name).write_text(r.text)
    tpl = str(fleet_dir / "templates" / "miredo.conf.j2")
    gitinfo.record_applied(ctx.paths, ["c1", "r1"], gitinfo.revision(fleet_dir, Path(tpl)))
    with (fleet_dir / "r1.yaml").open("a") as fh:
        fh.write("mtu: 1400\n")
    gitinfo.record_applied(ctx.paths, ["r1"], gitinfo.revision(fleet_dir, Path(tpl)))
    applied = gitinfo.load_applied(ctx.paths)
    # the template lives in the fleet folder here: same commit, and it is not edited
    assert applied["c1"] == {"fleet": head, "fleet_dirty": False, "template": head,
                             "template_dirty": False, "template_path": tpl}
    assert applied["r1"]["fleet_dirty"] is True
    rows = status.collect(ctx.load(), ctx.paths, ["c1", "r1"], None, strays={})
    assert [r.to_json()["revision"] for r in rows] == [applied["c1"], applied["r1"]]
    assert [line.split()[-1] for line in status.table(rows).splitlines()[1:]] == \
        [head, head + "+"]
    assert f"applied from: fleet {head} (uncommitted edits), template {head}" in \
        status.detail(rows[1], ctx.load().instances["r1"])
    gitinfo.applied_path(ctx.paths).write_text("not json")
    assert gitinfo.load_applied(ctx.paths) == {}


def test_template_outside_the_fleet_repo_is_described_by_its_own_repo(tmp_path: Path) -> None:
    fleet_dir = make_fleet(tmp_path / "repo", own_template=False)
    tpl_repo = tmp_path / "project"
    (tpl_repo / "templates").mkdir(parents=True)
    tpl = tpl_repo / "templates" / "miredo.conf.j2"
    tpl.write_text(TEMPLATE.read_text())
    git(tpl_repo, "init", "-q")
    git(tpl_repo, "add", ".")
    git(tpl_repo, "commit", "-q", "-m", "template")
    tpl.write_text(TEMPLATE.read_text() + "# edited\n")
    rev = gitinfo.revision(fleet_dir, tpl)
    assert rev.template == gitinfo.TreeState(git(tpl_repo, "rev-parse", "--short=12", "HEAD"),
                                             True)
    assert rev.fleet.dirty is False
    assert rev.edits == [f"the template {tpl} has uncommitted edits"]
    assert rev.record()["template_dirty"] is True and rev.record()["fleet_dirty"] is False


def test_up_warns_about_edits_and_require_clean_refuses(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    fleet_dir = make_fleet(tmp_path / "repo")
    gitinfo.check_clean(fleet_dir, require_clean=True)  # clean: silent
    assert capsys.readouterr().err == ""
    (fleet_dir / "c2.yaml").write_text("role: client\n")
    gitinfo.check_clean(fleet_dir, require_clean=False)
    err = capsys.readouterr().err
    assert err.startswith("miredoctl: warning: the fleet folder has uncommitted edits")
    assert err.count("\n") == 1
    with pytest.raises(MiredoctlError, match="--require-clean: the fleet folder has "
                                             "uncommitted edits"):
        gitinfo.check_clean(fleet_dir, require_clean=True)
    plain = make_fleet(tmp_path / "plain", in_git=False)
    gitinfo.check_clean(plain, require_clean=False)  # outside git: nothing to warn about
    assert capsys.readouterr().err == ""
    with pytest.raises(MiredoctlError, match="not in git"):
        gitinfo.check_clean(plain, require_clean=True)


def test_cli_require_clean_exits_1_before_touching_the_state(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    fleet_dir = make_fleet(tmp_path / "repo")
    (fleet_dir / "c2.yaml").write_text("role: client\n")
    state = tmp_path / "state"
    code = cli.main(["--fleet", str(fleet_dir), "--state-dir", str(state), "up",
                     "--require-clean"])
    assert code == 1
    assert "--require-clean: the fleet folder has uncommitted edits" in capsys.readouterr().err
    assert not state.exists()


class Supervised:
    """A running supervisord stand-in that holds c1, r1 and `gone` (not in the inventory)."""

    def __init__(self, names: tuple[str, ...] = ("c1", "r1", "gone")) -> None:
        self.names = names

    def __call__(self, paths: StatePaths) -> Supervised:
        return self

    def running(self) -> bool:
        return True

    def processes(self) -> dict[str, dict[str, Any]]:
        return {n: {"name": n, "state": 20, "statename": "RUNNING", "pid": 1000 + i}
                for i, n in enumerate(self.names)}


@pytest.mark.parametrize("remove", [False, True])
def test_whole_fleet_up_keeps_orphans_unless_asked(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   remove: bool) -> None:
    fleet_dir = make_fleet(tmp_path / "repo", in_git=False)
    (fleet_dir / "r1.yaml").write_text(FILES["r1.yaml"] + "enabled: false\n")
    ctx = ops.Context(fleet_dir, StatePaths(tmp_path / "state"))
    monkeypatch.setattr(ops, "SupervisordClient", Supervised())
    plans, _ = ops.up(ctx, ["c1", "r1"], whole_fleet=True, explicit=False, dry_run=True,
                      remove_orphans=remove)
    got = {p.name: p.action for p in plans}
    # r1 is disabled in the inventory: removed either way; `gone` is an orphan
    assert (got["r1"], got["gone"]) == ("remove", "remove" if remove else "keep")
    partial, _ = ops.up(ctx, ["c1"], whole_fleet=False, explicit=True, dry_run=True)
    assert [p.name for p in partial] == ["c1"]  # a partial `up` leaves everything else


def test_orphan_helpers() -> None:
    fleet = Fleet(Path("/nonexistent"), {}, None)
    assert orphans.orphans(fleet, ["b", "_reaper", "a"]) == ["a", "b"]
    res = orphans.kept_results(["a"], {"a": {"statename": "RUNNING"}})
    assert res[0].action == orphans.KEPT and res[0].ok
    assert orphans.warning(res) == ("miredoctl: warning: 1 orphan(s) run but are not in the "
                                    "inventory: a (left running; `--remove-orphans` stops and "
                                    "removes them)")
    assert orphans.warning([]) is None


def test_status_runs_no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """status must stay fast at any fleet size: the revision comes from applied.json only."""
    fleet_dir = make_fleet(tmp_path / "repo")
    ctx = ops.Context(fleet_dir, StatePaths(tmp_path / "state"))
    ctx.paths.ensure()
    for name, r in render_fleet(ctx.load(), ctx.paths).items():
        ctx.paths.config(name).write_text(r.text)
    gitinfo.record_applied(ctx.paths, ["c1", "r1"],
                           gitinfo.revision(fleet_dir, gitinfo.fleet_template(fleet_dir)))
    real_run, real_popen = subprocess.run, subprocess.Popen

    def no_git(argv: Any, *args: Any, **kwargs: Any) -> Any:
        assert "git" not in (argv[0] if isinstance(argv, list) else argv), argv
        return real_run(argv, *args, **kwargs)

    def no_git_popen(argv: Any, *args: Any, **kwargs: Any) -> Any:
        assert "git" not in (argv[0] if isinstance(argv, list) else argv), argv
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setattr(subprocess, "Popen", no_git_popen)
    fleet = ctx.load()
    rows = status.collect(fleet, ctx.paths, ["c1", "r1"], None, strays={})
    assert all(r.revision and r.revision["fleet"] for r in rows)
    with pytest.raises(AssertionError):  # the guard itself works
        gitinfo.tree_state(fleet_dir)


def test_remove_orphans_needs_the_whole_fleet(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    fleet_dir = make_fleet(tmp_path / "repo", in_git=False)
    code = cli.main(["--fleet", str(fleet_dir), "--state-dir", str(tmp_path / "state"),
                     "up", "c1", "--remove-orphans"])
    assert code == 2
    assert "--remove-orphans goes with the whole fleet" in capsys.readouterr().err
    assert not list((tmp_path / "state").rglob("*.conf"))  # nothing rendered or written


def test_a_repository_git_refuses_is_said_not_taken_for_no_git(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture
                                                                ) -> None:
    """root in an operator's checkout: git will not read a repository another user owns.
    That is neither "not in git" nor clean: up says why it cannot tell, --require-clean
    refuses. (Runs as root, like the CI; the repository is handed to `nobody`.)"""
    fleet_dir = make_fleet(tmp_path / "repo")
    for path in [tmp_path / "repo", *(tmp_path / "repo").rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    state = gitinfo.tree_state(fleet_dir)
    assert state.in_git and state.commit is None and state.refused
    assert f"safe.directory {tmp_path / 'repo'}" in state.refused
    gitinfo.check_clean(fleet_dir, require_clean=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot tell whether the fleet folder has uncommitted " \
        "edits: git refuses to read" in err
    with pytest.raises(MiredoctlError, match="cannot tell whether the fleet folder"):
        gitinfo.check_clean(fleet_dir, require_clean=True)
    rev = gitinfo.revision(fleet_dir, gitinfo.fleet_template(fleet_dir))
    assert rev.record()["fleet_refused"] is True
    assert gitinfo.describe(rev.record()) == ("fleet unknown (git refused to read the "
                                              "repository), template unknown (git refused to "
                                              "read the repository)")
