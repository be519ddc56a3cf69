"""hosts.yaml and `host:`: what `validate` says about a fleet across hosts (no ansible, no SSH)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from miredoctl.errors import InventoryError, UnknownInstanceError
from miredoctl.inventory import load_fleet
from miredoctl.remote import hosts as hosts_mod

HOSTS = """\
all:
  vars:
    ansible_user: root
  children:
    eu:
      hosts:
        fra1: {ansible_host: 192.0.2.2}
        fra2:
          ansible_host: 192.0.2.6
          ansible_port: 2222
    us:
      hosts:
        iad1: {ansible_host: 192.0.2.10}
        nowhere: {}
"""


def fleet(tmp_path: Path, files: dict[str, str], hosts: str | None = HOSTS) -> Path:
    (tmp_path / "defaults.yaml").write_text("allow_documentation_addresses: true\n")
    if hosts is not None:
        (tmp_path / "hosts.yaml").write_text(hosts)
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def problems(root: Path) -> list[str]:
    with pytest.raises(InventoryError) as exc:
        load_fleet(root)
    return [str(p) for p in exc.value.problems]


def test_hosts_yaml_is_not_an_instance_and_groups_inherit_vars(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\nhost: fra1\n"})
    f = load_fleet(root)
    assert f.names == ["r1"] and f.instances["r1"].host == "fra1"
    h = hosts_mod.load_checked(root)
    assert h.hosts["fra2"].vars == {"ansible_user": "root", "ansible_host": "192.0.2.6",
                                    "ansible_port": 2222}
    assert h.hosts["fra1"].groups == {"all", "eu"}
    assert h.expand(["eu"]) == ["fra1", "fra2"]
    assert h.expand(["fra*", "iad1"]) == ["fra1", "fra2", "iad1"]
    with pytest.raises(UnknownInstanceError, match="unknown host or group 'ams'"):
        h.expand(["ams"])


def test_unknown_host_and_host_without_address_are_file_line(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\nhost: ams1\n",
                            "r2": "role: relay\nhost: nowhere\n"})
    out = problems(root)
    assert any("r1.yaml:2: unknown host 'ams1' (not in " in p and
               p.endswith("hosts.yaml; hosts: fra1, fra2, iad1, nowhere)") for p in out), out
    assert any("hosts.yaml:14: host 'nowhere' (used by r2) has no address" in p for p in out), out


def test_host_without_hosts_yaml(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\nhost: fra1\n"}, hosts=None)
    assert any("r1.yaml:2: unknown host 'fra1' (the fleet has no hosts.yaml)" in p
               for p in problems(root))


def test_clashes_are_per_host(tmp_path: Path) -> None:
    same = "role: relay\nhost: fra1\nbind_port: 3545\n"
    root = fleet(tmp_path, {"r1": same, "r2": "role: relay\nhost: fra2\nbind_port: 3545\n"})
    assert load_fleet(root).names == ["r1", "r2"]  # same interface and port, other host
    (root / "r3.yaml").write_text(same)
    out = problems(root)
    assert any("r3.yaml:" in p and "of host fra1 is also used by r1" in p for p in out), out


def test_host_inherited_from_defaults(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\n"})
    (root / "defaults.yaml").write_text("allow_documentation_addresses: true\n"
                                        "roles:\n  relay:\n    host: iad1\n")
    f = load_fleet(root)
    assert f.instances["r1"].host == "iad1"
    assert str(f.instances["r1"].origins["host"]).endswith("defaults.yaml:4")


def test_bad_hosts_yaml_is_located(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\nhost: fra1\n"},
                 hosts="all:\n  hostz:\n    fra1: {}\nother: 1\n")
    out = problems(root)
    assert any("hosts.yaml:2: unknown key 'hostz'" in p for p in out), out
    assert any("hosts.yaml:4: unknown top-level key 'other'" in p for p in out), out


def test_single_host_fleet_never_reads_the_remote_package(tmp_path: Path) -> None:
    root = fleet(tmp_path, {"r1": "role: relay\n"}, hosts=None)
    sys.modules.pop("miredoctl.remote.hosts", None)
    load_fleet(root)
    assert "miredoctl.remote.hosts" not in sys.modules


def test_cli_refuses_what_does_not_work_across_hosts(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from miredoctl.cli import main

    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    single = fleet(tmp_path / "one", {"r1": "role: relay\n"}, hosts=None)
    state = ["--state-dir", str(tmp_path / "st")]
    assert main(["--fleet", str(single), *state, "status", "--host", "fra1"]) == 2
    assert "--host needs a fleet across hosts" in capsys.readouterr().err
    assert main(["--fleet", str(single), *state, "hosts"]) == 2
    assert "no hosts.yaml" in capsys.readouterr().err
    multi = fleet(tmp_path / "many", {"r1": "role: relay\nhost: fra1\n"})
    assert main(["--fleet", str(multi), *state, "exporter"]) == 2
    assert "`exporter` does not work across hosts yet" in capsys.readouterr().err
    # logs -f streams over plain ssh only, which this setting forbids
    monkeypatch.setenv("MIREDOCTL_REMOTE_VIA", "ansible")
    assert main(["--fleet", str(multi), *state, "logs", "-f"]) == 2
    assert "logs -f across hosts needs plain ssh" in capsys.readouterr().err
    assert main(["--fleet", str(multi), *state, "up", "--serial", "0"]) == 2


def test_instances_without_host_run_here_in_a_fleet_across_hosts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only local instances selected: no SSH, no ansible; the row says (local)."""
    import json

    from miredoctl.cli import main

    (tmp_path / "f").mkdir()
    root = fleet(tmp_path / "f", {"r0": "role: relay\n", "r1": "role: relay\nhost: fra1\n"})
    rc = main(["--fleet", str(root), "--state-dir", str(tmp_path / "st"), "--json",
               "status", "r0"])
    doc = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["host"]) for r in doc["instances"]] == [("r0", "(local)")], doc
    assert rc == 4  # as on one machine: this fleet's supervisord is not running here
