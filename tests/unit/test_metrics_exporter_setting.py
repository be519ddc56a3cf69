"""The inventory's `exporter:` setting: validated with file:line, rendered as a supervisord
program that supervisord's own parser reads back with exactly the command miredoctl meant."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from miredoctl.errors import InventoryError
from miredoctl.inventory import load_fleet
from miredoctl.ops import _check_supervisord_config
from miredoctl.render import EXPORTER, supervisord_conf
from miredoctl.state import StatePaths

CLIENT = "role: client\nserver: 203.0.113.10\n"


def _fleet(tmp_path: Path, defaults: str) -> Path:
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "c1.yaml").write_text(CLIENT)
    (d / "defaults.yaml").write_text(defaults)
    return d


def _problems(tmp_path: Path, defaults: str) -> list[str]:
    d = _fleet(tmp_path, defaults)
    with pytest.raises(InventoryError) as exc:
        load_fleet(d)
    return [str(p).replace(f"{d}/", "") for p in exc.value.problems]


@pytest.mark.parametrize(("text", "listen"), [
    ("", None),
    ("exporter: null\n", None),
    ("exporter: {}\n", "127.0.0.1:9531"),
    ('exporter: {listen: "127.0.0.1:9100"}\n', "127.0.0.1:9100"),
    ('exporter:\n  listen: "[::1]:9531"\n', "[::1]:9531"),
    ('exporter: {listen: "0.0.0.0:9531"}\n', "0.0.0.0:9531"),
])
def test_exporter_setting_is_off_by_default(tmp_path: Path, text: str, listen: str | None
                                            ) -> None:
    assert load_fleet(_fleet(tmp_path, text)).exporter_listen == listen


@pytest.mark.parametrize(("text", "problem"), [
    ('exporter: {listen: "localhost:9531"}\n',
     "defaults.yaml:1: exporter.listen must name an IP address (IPv6 in brackets), got string "
     "'localhost:9531'"),
    ('exporter:\n  listen: "127.0.0.1:70000"\n',
     "defaults.yaml:2: exporter.listen must end in a port 1-65535, got string "
     "'127.0.0.1:70000'"),
    ('exporter:\n  listen: "::1:9531"\n',
     "defaults.yaml:2: exporter.listen must name an IP address (IPv6 in brackets), got string "
     "'::1:9531'"),
    ("exporter:\n  listen: 9531\n",
     "defaults.yaml:2: exporter.listen must be a non-empty string, got integer 9531"),
    ('exporter:\n  listen: "127.0.0.1:9531"\n  lisen: x\n',
     "defaults.yaml:3: unknown key 'lisen' in exporter (did you mean 'listen'?); it has "
     "'listen:'"),
    ("exporter: 9531\n",
     'defaults.yaml:1: exporter must be a mapping like {listen: "127.0.0.1:9531"} or null, got '
     "integer 9531"),
    ('exporter: {listen: "127.0.0.1:9531\\n[program:x]"}\n',
     "defaults.yaml:1: exporter.listen must not contain control characters, got newline "
     "(U+000A) in string '127.0.0.1:9531\\n[program:x]'"),
])
def test_exporter_setting_problems_are_file_line(tmp_path: Path, text: str, problem: str
                                                 ) -> None:
    assert _problems(tmp_path, text) == [problem]


def _programs(conf: Path) -> dict[str, list[str]]:
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config_file(do_usage=False)
    return {g.name: shlex.split(g.process_configs[0].command)
            for g in options.configroot.supervisord.process_group_configs}


def test_supervisord_runs_the_exporter_only_when_asked(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state dir")
    paths.ensure()
    fleet_dir = tmp_path / "fleet"
    paths.supervisord_conf.write_text(supervisord_conf(paths, "miredoctl-x"))
    assert EXPORTER not in _programs(paths.supervisord_conf)

    paths.supervisord_conf.write_text(
        supervisord_conf(paths, "miredoctl-x", "[::1]:9531", fleet_dir))
    command = _programs(paths.supervisord_conf)[EXPORTER]
    assert command == [sys.executable, "-m", "miredoctl.cli", "exporter", "--listen",
                       "[::1]:9531", "--fleet", str(fleet_dir.resolve()), "--state-dir",
                       str(paths.root)]
    _check_supervisord_config(paths)  # `up` accepts its own exporter program
