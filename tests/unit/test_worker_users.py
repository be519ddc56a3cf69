"""Which account a worker runs as: the engine's default (`teredo`, else `nobody` with a
warning) and the manager's `user: auto` (one `teredo-<name>` system user per instance).

The kernel side (workers of two instances cannot signal each other, `miredoctl up` creating
the accounts) is tests/kernel/test_worker_users.py.
"""

from __future__ import annotations

import pwd
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.options import DEFAULT_USER, FALLBACK_USER
from engine.runtime.privsep import PrivsepError, resolve_default_user
from miredoctl import users
from miredoctl.errors import InventoryError, MiredoctlError
from miredoctl.inventory import load_fleet
from miredoctl.render import render_fleet
from miredoctl.state import StatePaths

MISSING = f"tdt-missing-{secrets.token_hex(4)}"


def test_engine_default_user_is_teredo_and_unset_means_default() -> None:
    assert (DEFAULT_USER, FALLBACK_USER) == ("teredo", "nobody")
    assert cli.run_options(cli.parse_args([])).user is None
    assert cli.run_options(cli.parse_args(["-u", "miredo"])).user == "miredo"
    assert "default: teredo" in cli.HELP and "nobody" in cli.HELP


def test_default_user_when_it_exists_no_warning() -> None:
    account, warning = resolve_default_user("nobody", "nobody")
    assert account.name == "nobody" and warning is None


def test_missing_default_user_falls_back_with_a_warning_naming_the_fix() -> None:
    account, warning = resolve_default_user(MISSING, "nobody")
    assert account.uid == pwd.getpwnam("nobody").pw_uid
    assert warning is not None and MISSING in warning and "'nobody'" in warning
    assert f"useradd --system --no-create-home --shell /usr/sbin/nologin {MISSING}" in warning


def test_a_default_user_that_is_root_is_refused_not_replaced() -> None:
    with pytest.raises(PrivsepError, match="uid 0"):
        resolve_default_user("root", "nobody")


def test_auto_user_names_fit_useradd_and_stay_distinct() -> None:
    assert users.auto_user_name("relay") == "teredo-relay"
    a = users.auto_user_name("a" * 32)
    b = users.auto_user_name("a" * 31 + "b")
    assert len(a) == len(b) == users.MAX_NAME and a != b
    assert a.startswith("teredo-aaaaaaaaaaaaaaaa-")
    assert users.auto_user_name("x" * 25) == "teredo-" + "x" * 25  # exactly 32: kept whole


def _fleet(tmp_path: Path, user: str) -> Path:
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "defaults.yaml").write_text(f"allow_documentation_addresses: true\nall:\n"
                                     f"  user: {user}\n")
    (d / "srv.yaml").write_text("role: server\nengine: miredo\n"
                                "server_bind_address: 203.0.113.10\n")
    (d / "cli.yaml").write_text("role: client\nserver: 203.0.113.10\n")
    (d / "cli2.yaml").write_text("role: client\nserver: 203.0.113.10\nuser: nobody\n"
                                 "interface: teredo2\n")
    return d


def test_user_auto_validates_without_the_account_and_renders_one_per_instance(tmp_path):
    rendered = render_fleet(load_fleet(_fleet(tmp_path, "auto")), StatePaths(tmp_path / "s"))
    srv, cli_, cli2 = (rendered[n].command for n in ("srv", "cli", "cli2"))
    assert srv[srv.index("-u") + 1] == "teredo-srv"  # Debian's miredo-server too
    assert cli_[cli_.index("-u") + 1] == "teredo-cli"
    assert cli2[cli2.index("-u") + 1] == "nobody"  # an instance may still name its own


def test_a_missing_named_user_is_still_refused(tmp_path):
    with pytest.raises(InventoryError, match="names no user"):
        load_fleet(_fleet(tmp_path, MISSING))


class FakeAccounts:
    """pwd and useradd, in memory: which accounts exist and what useradd was asked."""

    def __init__(self, existing: set[str], fail: bool = False) -> None:
        self.existing = set(existing)
        self.fail = fail
        self.calls: list[list[str]] = []

    def getpwnam(self, name: str) -> Any:
        if name not in self.existing:
            raise KeyError(name)
        return pwd.struct_passwd((name, "x", 999, 999, "", "/nonexistent", "/usr/sbin/nologin"))

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        if self.fail:
            return subprocess.CompletedProcess(argv, 9, "", "useradd: user 'x' already exists\n")
        self.existing.add(argv[-1])
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_up_creates_missing_auto_accounts_once_and_only_those(tmp_path, monkeypatch):
    fleet = load_fleet(_fleet(tmp_path, "auto"))
    fake = FakeAccounts({"teredo-cli"})
    monkeypatch.setattr(users.pwd, "getpwnam", fake.getpwnam)
    monkeypatch.setattr(users.subprocess, "run", fake.run)
    created = users.ensure_users(fleet, ["srv", "cli", "cli2"])
    assert [(r.name, r.action, r.ok) for r in created] == [("srv", "user created", True)]
    assert created[0].detail == "teredo-srv (uid 999)"
    (argv,) = fake.calls
    assert argv[1:] == ["--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
                        "teredo-fleet worker of srv", "teredo-srv"]
    assert users.ensure_users(fleet, ["srv", "cli", "cli2"]) == []  # now they all exist


def test_a_failing_useradd_stops_up_with_its_message(tmp_path, monkeypatch):
    fleet = load_fleet(_fleet(tmp_path, "auto"))
    fake = FakeAccounts(set(), fail=True)
    monkeypatch.setattr(users.pwd, "getpwnam", fake.getpwnam)
    monkeypatch.setattr(users.subprocess, "run", fake.run)
    with pytest.raises(MiredoctlError, match=r"useradd teredo-srv failed .*already exists"):
        users.ensure_users(fleet, ["srv"])
