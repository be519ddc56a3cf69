"""`miredoctl service`: the generated unit, the shipped units, install/uninstall into a
temporary folder, and `systemd-analyze verify` on every unit (miredoctl/service.py, systemd/)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from miredoctl import cli, fleets, service

ROOT = Path(__file__).resolve().parents[2]
VENV_ENGINE = Path(service.miredoctl_argv()[0]).parent / "teredo-engine"
SHIPPED_ENGINE = "/usr/local/bin/teredo-engine"


@pytest.fixture
def bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (("MIREDOCTL_RUN_BASE", "run"), ("MIREDOCTL_LIB_BASE", "lib"),
                     ("MIREDOCTL_LOG_BASE", "log"), ("MIREDOCTL_UNIT_DIR", "units")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("MIREDOCTL_STATE", "MIREDOCTL_PROJECT", "MIREDOCTL_FLEET"):
        monkeypatch.delenv(var, raising=False)
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for src in (ROOT / "instances").glob("*.yaml"):
        (fleet / src.name).write_text(src.read_text())
    with (fleet / "defaults.yaml").open("a") as fh:
        fh.write("name: unit-test\n")
    return tmp_path


def verify(*units: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """systemd-analyze verify: parses the units, checks every Exec binary exists."""
    assert shutil.which("systemd-analyze"), "systemd-analyze (Debian package systemd) missing"
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True,
                          text=True, env=env, timeout=60)


def exec_lines(unit: Path) -> dict[str, list[str]]:
    out = {}
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecReload", "ExecStop", "PIDFile"):
            out[key] = shlex.split(value)
    return out


def test_install_status_uninstall_into_a_folder(bases: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fleet = bases / "fleet"
    assert cli.main(["--fleet", str(fleet), "service", "status"]) == 3
    assert "not installed" in capsys.readouterr().out
    assert cli.main(["--fleet", str(fleet), "service", "install"]) == 0
    said = capsys.readouterr().out
    unit = bases / "units" / "miredoctl-unit-test.service"
    assert f"{unit}: written" in said
    assert "systemd is not running here" in said  # this container's PID 1 is not systemd
    assert (bases / "lib" / "unit-test").is_dir() and (bases / "log" / "unit-test").is_dir()
    lines = exec_lines(unit)
    base = [str(service.miredoctl_argv()[0]), "--fleet", str(fleet.resolve()),
            "--project", "unit-test", "--run-dir", str(bases / "run" / "unit-test"),
            "--lib-dir", str(bases / "lib" / "unit-test"),
            "--log-dir", str(bases / "log" / "unit-test")]
    assert lines["ExecStart"] == [*base, "up", "--all"]
    assert lines["ExecReload"] == [*base, "reload", "--all"]
    assert lines["ExecStop"] == [*base, "down", "--all"]
    assert lines["PIDFile"] == [str(bases / "run" / "unit-test" / "supervisord.pid")]
    text = unit.read_text()
    for wanted in ("Type=forking", "After=network-online.target",
                   "Wants=network-online.target", "Restart=on-failure", "ProtectSystem=full",
                   "ProtectHome=read-only", "PrivateTmp=yes", "WantedBy=multi-user.target"):
        assert wanted in text.splitlines()
    for unwanted in ("PrivateNetwork", "PrivateDevices", "RestrictAddressFamilies"):
        assert unwanted not in text
    proc = verify(unit)
    assert proc.returncode == 0 and str(unit) not in proc.stderr, proc.stderr
    assert cli.main(["--fleet", str(fleet), "service", "install"]) == 0
    assert f"{unit}: unchanged" in capsys.readouterr().out
    assert cli.main(["--fleet", str(fleet), "service", "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["installed"], data["up_to_date"], data["systemd"]) == (True, True, False)
    unit.write_text(text.replace("RestartSec=5", "RestartSec=9"))
    assert cli.main(["--fleet", str(fleet), "service", "status"]) == 0
    assert "differs from what `service install` writes now" in capsys.readouterr().out
    assert cli.main(["--fleet", str(fleet), "service", "uninstall"]) == 0
    assert not unit.exists()
    assert cli.main(["--fleet", str(fleet), "service", "uninstall"]) == 0
    assert "not installed" in capsys.readouterr().out
    assert sorted(p.name for p in (bases / "units").iterdir()) == []


def test_default_folders_are_not_written_into_the_unit(bases: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MIREDOCTL_RUN_BASE", "MIREDOCTL_LIB_BASE", "MIREDOCTL_LOG_BASE"):
        monkeypatch.delenv(var)
    paths = fleets.fleet_paths(bases / "fleet", adopt=False)
    assert str(paths.root) == "/run/miredoctl/unit-test"
    text = service.render_unit(bases / "fleet", paths)
    start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert "--run-dir" not in start and "--project unit-test up --all" in start
    assert "PIDFile=/run/miredoctl/unit-test/supervisord.pid" in text.splitlines()
    assert ("ReadWritePaths=-/run/miredoctl/unit-test -/var/lib/miredoctl/unit-test "
            "-/var/log/miredoctl/unit-test") in text.splitlines()


def test_a_state_dir_fleet_keeps_its_one_folder(bases: Path) -> None:
    paths = fleets.fleet_paths(bases / "fleet", state_dir=str(bases / "one"))
    text = service.render_unit(bases / "fleet", paths)
    assert f"--state-dir {bases / 'one'} up --all" in text
    assert f"PIDFile={bases / 'one' / 'supervisord.pid'}" in text


def test_verify_catches_a_missing_binary(bases: Path) -> None:
    """The control for the checks above: verify does look at the Exec lines."""
    unit = bases / "miredoctl-broken.service"
    unit.write_text(service.render_unit(bases / "fleet", fleets.fleet_paths(bases / "fleet"))
                    .replace(str(service.miredoctl_argv()[0]), "/nonexistent/miredoctl"))
    proc = verify(unit)
    assert proc.returncode != 0 and "/nonexistent/miredoctl" in proc.stderr


def test_shipped_engine_template_verifies(tmp_path: Path) -> None:
    src = ROOT / "systemd" / "teredo-engine@.service"
    text = src.read_text()
    assert SHIPPED_ENGINE in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "-f -c /etc/miredo/%i.conf" in text
    settings = [ln.partition("=")[0] for ln in text.splitlines() if not ln.startswith("#")]
    for unwanted in ("PrivateNetwork", "PrivateDevices", "RestrictAddressFamilies"):
        assert unwanted not in settings
    unit = tmp_path / "teredo-engine@.service"
    unit.write_text(text.replace(SHIPPED_ENGINE, str(VENV_ENGINE)))
    proc = verify(tmp_path / "teredo-engine@demo.service")
    assert proc.returncode == 0 and "teredo-engine@" not in proc.stderr, proc.stderr
    # the engine's own parser accepts the options the unit gives it
    argv = shlex.split(next(ln for ln in unit.read_text().splitlines()
                            if ln.startswith("ExecStart=")).partition("=")[2])
    assert argv[1:3] == ["-f", "-c"]
    help_text = subprocess.run([str(VENV_ENGINE), "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    for option in ("-f", "-c", "-p", "--status-socket", "--check"):
        assert option in help_text


def test_shipped_miredo_drop_in_is_read_and_verifies(tmp_path: Path) -> None:
    """The drop-in next to Debian's miredo.service: a unit search path of our own makes
    systemd-analyze read it (SYSTEMD_UNIT_PATH, trailing ':' keeps the system's paths)."""
    assert Path("/lib/systemd/system/miredo.service").exists(), "Debian's miredo missing"
    shutil.copytree(ROOT / "systemd" / "miredo.service.d", tmp_path / "miredo.service.d")
    env = {"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = verify(Path("miredo.service"), env=env)
    assert proc.returncode == 0 and "teredo-fleet.conf" not in proc.stderr, proc.stderr
    with (tmp_path / "miredo.service.d" / "teredo-fleet.conf").open("a") as fh:
        fh.write("NoSuchSetting=1\n")
    proc = verify(Path("miredo.service"), env=env)
    assert "teredo-fleet.conf" in proc.stderr and "NoSuchSetting" in proc.stderr


def test_with_systemd_running_install_enables_and_uninstall_disables(
        bases: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The path this container cannot take for real (its PID 1 is not systemd): a systemctl
    of our own on PATH records what it was asked, /run/systemd/system is a folder of ours."""
    booted = bases / "systemd-system"
    booted.mkdir()
    monkeypatch.setattr(service, "SYSTEMD_RUNNING", booted)
    calls = bases / "calls"
    fake = bases / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                    "case \"$1\" in is-active) echo active;; is-enabled) echo enabled;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    fleet = bases / "fleet"
    unit = "miredoctl-unit-test.service"
    assert cli.main(["--fleet", str(fleet), "service", "install"]) == 0
    assert f"enabled {unit}" in capsys.readouterr().out
    assert cli.main(["--fleet", str(fleet), "service", "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["systemd"], data["active"], data["enabled"]) == (True, "active", "enabled")
    assert cli.main(["--fleet", str(fleet), "service", "uninstall"]) == 0
    assert calls.read_text().splitlines() == [
        "daemon-reload", f"enable {unit}", f"is-active {unit}", f"is-enabled {unit}",
        f"disable {unit}", "daemon-reload"]
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    assert cli.main(["--fleet", str(fleet), "service", "install"]) == 1
    assert "systemctl daemon-reload failed: Failed to connect to bus" in capsys.readouterr().err
