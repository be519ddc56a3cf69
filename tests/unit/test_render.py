"""Rendering: configs both engines accept, headers with provenance, program sections, writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miredoctl.errors import InventoryError
from miredoctl.inventory import load_fleet
from miredoctl.render import (
    MIREDO_CHECKCONF,
    body_of,
    checkconf_problems,
    engine_argv0,
    render_fleet,
    supervisord_conf,
)
from miredoctl.state import StatePaths, write_atomic
from miredoctl.supervisord import identifier_for

ROOT = Path(__file__).resolve().parents[2]
needs_checkconf = pytest.mark.skipif(not os.access(MIREDO_CHECKCONF, os.X_OK),
                                     reason="Debian's miredo-checkconf is not installed")


def state(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state")


def test_default_fleet_configs(tmp_path: Path) -> None:
    rendered = render_fleet(load_fleet(ROOT / "instances"), state(tmp_path))
    assert body_of(rendered["client1"].text).splitlines()[1:] == [
        "RelayType client", "ServerAddress 203.0.113.10", "InterfaceName teredo",
        "SyslogFacility daemon"]
    assert body_of(rendered["relay"].text).splitlines()[1:] == [
        "RelayType cone", "InterfaceMTU 1280", "InterfaceName teredo",
        "BindAddress 203.0.113.20", "BindPort 3545", "SyslogFacility daemon"]
    assert body_of(rendered["server"].text).splitlines()[1:] == [
        "ServerBindAddress 203.0.113.10", "ServerBindAddress2 203.0.113.11",
        "InterfaceMTU 1280", "SyslogFacility daemon"]


@needs_checkconf
def test_rendered_client_and_relay_pass_miredo_checkconf(tmp_path: Path) -> None:
    rendered = render_fleet(load_fleet(ROOT / "instances"), state(tmp_path))
    assert checkconf_problems(rendered, tmp_path) == []
    # and the check really runs: a directive miredo does not know makes it fail
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "c.yaml").write_text("role: client\nserver: 203.0.113.10\nlocal_discovery: enabled\n")
    probs = checkconf_problems(render_fleet(load_fleet(bad), state(tmp_path)), tmp_path)
    assert len(probs) == 1 and "Superfluous directive LocalDiscovery" in probs[0].message


def test_rendered_configs_pass_teredo_engine_check(tmp_path: Path) -> None:
    rendered = render_fleet(load_fleet(ROOT / "instances"), state(tmp_path))
    for name, r in rendered.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(r.text)
        proc = subprocess.run([*engine_argv0(), "--check", "-c", str(conf)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (name, proc.stderr)


def test_header_names_sources_and_hash(tmp_path: Path) -> None:
    r = render_fleet(load_fleet(ROOT / "instances"), state(tmp_path))["relay"]
    header = r.header.splitlines()
    assert all(line.startswith("# miredoctl: ") for line in header)
    assert any("instances/relay.yaml" in line and "instances/defaults.yaml" in line
               for line in header)
    assert header[-1] == f"# miredoctl: sha256 {r.sha256}"
    assert body_of(r.text) == r.body


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_header_git_commit_and_stable_bodies(tmp_path: Path) -> None:
    fleet = tmp_path / "repo" / "instances"
    fleet.mkdir(parents=True)
    (fleet / "a.yaml").write_text("role: client\nserver: 203.0.113.10\nnetns: a\n")
    (fleet / "b.yaml").write_text("role: client\nserver: 203.0.113.10\nnetns: b\n")
    git(fleet.parent, "init", "-q")
    git(fleet.parent, "add", ".")
    git(fleet.parent, "commit", "-qm", "one")
    first = git(fleet.parent, "rev-parse", "--short", "HEAD")
    before = render_fleet(load_fleet(fleet), state(tmp_path))
    assert f"(git {first})" in before["a"].header
    (fleet / "b.yaml").write_text("role: client\nserver: 203.0.113.11\nnetns: b\n")
    edited = render_fleet(load_fleet(fleet), state(tmp_path))
    assert f"(git {first}, edited since)" in edited["b"].header
    git(fleet.parent, "commit", "-qam", "two")
    after = render_fleet(load_fleet(fleet), state(tmp_path))
    assert after["a"].text == before["a"].text  # a's file was not in the new commit
    assert after["b"].body != before["b"].body
    assert "edited since" not in after["b"].header


def test_program_section_and_commands(tmp_path: Path) -> None:
    paths = state(tmp_path)
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "defaults.yaml").write_text("allow_documentation_addresses: true\n")
    (d / "srv.yaml").write_text("role: server\nengine: miredo\nnetns: ns-srv\n"
                                "server_bind_address: 203.0.113.10\n")
    (d / "cli.yaml").write_text("role: client\nserver: 203.0.113.10\nuser: nobody\n")
    rendered = render_fleet(load_fleet(d), paths)
    srv, cli = rendered["srv"], rendered["cli"]
    assert srv.command[:4] == [shutil.which("ip") or "/usr/bin/ip", "netns", "exec", "ns-srv"]
    assert srv.command[4:] == ["/usr/sbin/miredo-server", "-f", "-c", str(paths.config("srv")),
                               "-p", str(paths.pidfile("srv")), "-u", "miredo-server"]
    assert cli.command == [*engine_argv0(), "-f", "-c", str(paths.config("cli")), "-p",
                           str(paths.pidfile("cli")), "--status-socket",
                           str(paths.status_socket("cli")), "-u", "nobody"]
    prog = srv.program.splitlines()
    for setting in ("[program:srv]", "stopasgroup=true", "killasgroup=true", "autorestart=true",
                    "redirect_stderr=true", "stdout_logfile_maxbytes=5MB", "priority=10",
                    f"stdout_logfile={paths.log('srv')}"):
        assert setting in prog
    assert "priority=30" in cli.program


def test_percent_is_escaped_for_supervisord(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "100%state")
    conf = supervisord_conf(paths, identifier_for(paths))
    assert f"file={tmp_path}/100%%state/supervisor.sock" in conf
    assert "chmod=0700" in conf and "[include]" in conf
    assert sys.executable in conf  # the reaper runs from the same interpreter


def test_fleet_template_override_and_template_errors(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    (d / "templates").mkdir(parents=True)
    (d / "c.yaml").write_text("role: client\nserver: 203.0.113.10\n")
    (d / "templates" / "miredo.conf.j2").write_text("ServerAddress {{ v.server }}\n")
    r = render_fleet(load_fleet(d), state(tmp_path))["c"]
    assert r.body == "ServerAddress 203.0.113.10\n"
    (d / "templates" / "miredo.conf.j2").write_text("line one\n{% if %}\n")
    with pytest.raises(InventoryError) as exc:
        render_fleet(load_fleet(d), state(tmp_path))
    assert str(exc.value.problems[0]).startswith(f"{d}/templates/miredo.conf.j2:2: template error")
    (d / "templates" / "miredo.conf.j2").write_text("X {{ nothing_here }}\n")
    with pytest.raises(InventoryError) as exc:
        render_fleet(load_fleet(d), state(tmp_path))
    assert "nothing_here" in str(exc.value)


def test_write_atomic_skips_identical_content(tmp_path: Path) -> None:
    path = tmp_path / "f.conf"
    assert write_atomic(path, "a\n") is True
    inode = path.stat().st_ino
    assert write_atomic(path, "a\n") is False
    assert path.stat().st_ino == inode  # not replaced
    assert write_atomic(path, "b\n") is True
    assert path.read_text() == "b\n" and path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["f.conf"]  # no temp files left


def test_default_template_is_package_data_pointing_at_the_top_level_file() -> None:
    """The wheel ships miredoctl/templates/miredo.conf.j2 (package data); in the source tree
    that path must lead to the one file operators edit, templates/miredo.conf.j2."""
    import importlib.resources

    from miredoctl.render import default_template

    packaged = importlib.resources.files("miredoctl").joinpath("templates", "miredo.conf.j2")
    assert packaged.is_file()
    assert default_template() == (ROOT / "templates" / "miredo.conf.j2").resolve()
    assert packaged.read_text() == (ROOT / "templates" / "miredo.conf.j2").read_text()
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "templates/*.j2" in data["tool"]["setuptools"]["package-data"]["miredoctl"]
