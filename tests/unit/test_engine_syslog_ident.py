"""The engine's syslog lines name their instance: miredoctl starts every engine with
MIREDOCTL_INSTANCE (render.program_section), and the ident becomes teredo-engine/<name>."""

from __future__ import annotations

import syslog
from pathlib import Path
from typing import Any

import pytest

from engine.runtime import logsetup
from miredoctl.inventory import load_fleet
from miredoctl.render import render_fleet
from miredoctl.state import StatePaths


@pytest.mark.parametrize(("env", "ident"), [
    (None, "teredo-engine"),
    ("relay", "teredo-engine/relay"),
    ("edge-1_a", "teredo-engine/edge-1_a"),
    ("", "teredo-engine"),
    ("bad name\n", "teredo-engine"),  # never copied into syslog lines as it is
    ("-x", "teredo-engine"),
])
def test_ident_names_the_instance(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                  ident: str) -> None:
    if env is None:
        monkeypatch.delenv(logsetup.INSTANCE_ENV, raising=False)
    else:
        monkeypatch.setenv(logsetup.INSTANCE_ENV, env)
    opened: list[tuple[Any, ...]] = []
    monkeypatch.setattr(syslog, "openlog", lambda *a: opened.append(a))
    logsetup.SyslogHandler(syslog.LOG_DAEMON)
    assert opened == [(ident, syslog.LOG_PID | syslog.LOG_NDELAY, syslog.LOG_DAEMON)]


def test_miredoctl_passes_the_instance_name_to_the_engine(tmp_path: Path) -> None:
    """The other half: the program section sets the variable the engine reads."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "edge-relay.yaml").write_text("role: relay\ninterface: teredo1\n")
    rendered = render_fleet(load_fleet(fleet), StatePaths(tmp_path / "state"))
    assert f'environment={logsetup.INSTANCE_ENV}="edge-relay"' in \
        rendered["edge-relay"].program.splitlines()
