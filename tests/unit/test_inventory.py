"""Inventory loading: layering with origins, and every kind of bad input as `file:line: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from miredoctl.errors import InventoryError, UnknownInstanceError, UsageError
from miredoctl.inventory import load_fleet
from miredoctl.selection import Selection, resolve

ROOT = Path(__file__).resolve().parents[2]


def fleet_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "fleet"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    d = fleet_dir(tmp_path, files)
    with pytest.raises(InventoryError) as exc:
        load_fleet(d)
    # paths are shown relative to the cwd when below it; compare by file name
    return [str(p).replace(f"{d}/", "") for p in exc.value.problems]


CLIENT = "role: client\nserver: 203.0.113.10\n"


def test_default_fleet_loads_with_roles_and_namespaces() -> None:
    fleet = load_fleet(ROOT / "instances")
    assert fleet.names == ["client1", "client2", "relay", "server"]
    roles = {n: i.role for n, i in fleet.instances.items()}
    assert roles == {"client1": "client", "client2": "client", "relay": "relay",
                     "server": "server"}
    assert {i.netns for i in fleet.instances.values()} == {"mdl-cli", "mdl-cli2", "mdl-rly",
                                                           "mdl-srv"}


def test_layers_and_origins(tmp_path: Path) -> None:
    d = fleet_dir(tmp_path, {
        "defaults.yaml": "all:\n  syslog_facility: local3\n  mtu: 1400\n"
                         "roles:\n  client:\n    server: 203.0.113.10\n    server2: 203.0.113.11\n",
        "c1.yaml": "role: client\nsyslog_facility: user\nserver2: null\n",
        "r1.yaml": "role: relay\nnetns: r\n",
    })
    fleet = load_fleet(d)
    c1, r1 = fleet.instances["c1"], fleet.instances["r1"]
    assert c1.values["server"] == "203.0.113.10"
    assert str(c1.origins["server"]).endswith("defaults.yaml:6")
    assert c1.values["syslog_facility"] == "user"
    assert str(c1.origins["syslog_facility"]).endswith("c1.yaml:2")
    assert "server2" not in c1.values  # explicit null removes the inherited value
    assert "mtu" not in c1.values  # `all:` fields that do not apply to a client are skipped
    assert r1.values["mtu"] == 1400 and str(r1.origins["mtu"]).endswith("defaults.yaml:3")
    assert str(c1.origins["interface"]) == "built-in default"
    assert c1.values["engine"] == "teredo-engine" and c1.enabled


def test_unknown_key_with_suggestion_and_line(tmp_path: Path) -> None:
    got = problems(tmp_path, {"c1.yaml": CLIENT + "\nbind_prot: 4000\n"})
    assert got == ["c1.yaml:4: unknown key 'bind_prot' (did you mean 'bind_port'?)"]


def test_wrong_types_point_at_the_value(tmp_path: Path) -> None:
    got = problems(tmp_path, {"c1.yaml": CLIENT + "bind_port: '4000'\nenabled: maybe\n"
                                                  "tags: edge\ninterface: much-too-long-name\n"})
    assert got == [
        "c1.yaml:3: bind_port must be an integer 0-65535, got string '4000'",
        "c1.yaml:4: enabled must be true or false, got string 'maybe'",
        "c1.yaml:5: tags must be a list of strings, got string 'edge'",
        "c1.yaml:6: interface must be an interface name of 1-15 characters without spaces, "
        "'/' or ':', got string 'much-too-long-name'",
    ]


def test_ranges_and_addresses(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "r1.yaml": "role: relay\nmtu: 1000\nbind_address: 203.0.113.300\nbind_port: 80\n",
        "s1.yaml": "role: server\nserver_bind_address: 10.0.0.1\nprefix: 'ff02::'\n",
    })
    assert got == [
        "r1.yaml:2: mtu must be an integer 1280-65535, got 1000",
        "r1.yaml:3: bind_address must be an IPv4 address, got string '203.0.113.300'",
        "r1.yaml:4: bind_port 80 is privileged: engines bind after dropping root, use 0 or "
        ">= 1024",
        "s1.yaml:2: server_bind_address must be a global IPv4 address",
        "s1.yaml:3: prefix must not be a multicast prefix, got ff02::",
    ]


def test_role_requirements(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "c1.yaml": "role: client\n",
        "s1.yaml": "role: server\n",
        "x1.yaml": "engine: miredo\n",
        "x2.yaml": "role: router\n",
        "empty.yaml": "",
    })
    assert got == [
        "c1.yaml:1: a client needs 'server' (its Teredo server)",
        "empty.yaml:1: empty instance file: role is required: one of client, relay, server",
        "s1.yaml:1: a server needs 'server_bind_address' (its primary public IPv4)",
        "x1.yaml:1: role is required: one of client, relay, server",
        "x2.yaml:1: role must be one of client, relay, server, got string 'router'",
    ]


def test_fields_that_do_not_apply_to_the_role(tmp_path: Path) -> None:
    got = problems(tmp_path, {"c1.yaml": CLIENT + "prefix: '2001:0::'\n"
                                                  "server_bind_address: 203.0.113.10\n"})
    assert got == [
        "c1.yaml:3: prefix does not apply to a client (only to relay, server)",
        "c1.yaml:4: server_bind_address does not apply to a client (only to server)",
    ]


def test_yaml_syntax_duplicates_and_shape(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "a.yaml": CLIENT + "server: 203.0.113.11\n",
        "b.yaml": "role: client\n  server: [\n",
        "c.yaml": "- role: client\n",
        "Bad.yaml": CLIENT,
    })
    assert got[0].startswith("Bad.yaml: instance file names must be lower-case")
    assert got[1] == "a.yaml:3: duplicate key 'server' (first at line 2)"
    assert got[2].startswith("b.yaml:2: YAML syntax error")
    assert got[3] == "c.yaml:1: instance must be a mapping of key: value"


def test_defaults_file_errors(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "defaults.yaml": "all:\n  role: client\n  engin: miredo\nroles:\n  clinet: {}\n"
                         "  relay:\n    server: 203.0.113.10\nextra: 1\n",
        "c1.yaml": CLIENT,
    })
    assert got == [
        "defaults.yaml:2: role cannot be a default; set it in each instance file",
        "defaults.yaml:3: unknown key 'engin' (did you mean 'engine'?)",
        "defaults.yaml:5: unknown role 'clinet' (did you mean 'client'?); roles are client, "
        "relay, server",
        "defaults.yaml:7: server does not apply to a relay (only to client)",
        "defaults.yaml:8: unknown key 'extra'; a defaults file has 'all:', 'roles:', "
        "'allow_documentation_addresses:', 'exporter:' and 'notify:'",
    ]


def _sub(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name


def test_documentation_addresses_need_the_fleet_setting(tmp_path: Path) -> None:
    server = "role: server\nserver_bind_address: 203.0.113.10\n"
    assert problems(_sub(tmp_path, "prod"), {"s1.yaml": server}) == [
        "s1.yaml:2: server_bind_address 203.0.113.10 is a documentation address (RFC 5737); a "
        "lab fleet allows those with 'allow_documentation_addresses: true' in defaults.yaml"]
    assert problems(_sub(tmp_path, "off"), {
        "defaults.yaml": "allow_documentation_addresses: false\n", "s1.yaml": server}) == [
        "s1.yaml:2: server_bind_address 203.0.113.10 is a documentation address (RFC 5737); a "
        "lab fleet allows those with 'allow_documentation_addresses: true' in defaults.yaml"]
    assert problems(_sub(tmp_path, "typo"), {
        "defaults.yaml": "all: {}\nallow_documentation_addresses: yes please\n",
        "s1.yaml": "role: server\nserver_bind_address: 192.0.2.1\n"}) == [
        "defaults.yaml:2: allow_documentation_addresses must be true or false, got string "
        "'yes please'",
        "s1.yaml:2: server_bind_address 192.0.2.1 is a documentation address (RFC 5737); a "
        "lab fleet allows those with 'allow_documentation_addresses: true' in defaults.yaml"]
    lab = fleet_dir(_sub(tmp_path, "lab"), {
        "defaults.yaml": "allow_documentation_addresses: true\n", "s1.yaml": server})
    fleet = load_fleet(lab)
    assert fleet.allow_documentation_addresses
    assert fleet.instances["s1"].values["server_bind_address"] == "203.0.113.10"
    # the setting is about documentation ranges only: a private address stays an error
    assert problems(_sub(tmp_path, "private"), {
        "defaults.yaml": "allow_documentation_addresses: true\n",
        "s1.yaml": "role: server\nserver_bind_address: 10.0.0.1\n"}) == [
        "s1.yaml:2: server_bind_address must be a global IPv4 address"]


def test_engine_limits(tmp_path: Path) -> None:
    got = problems(tmp_path, {"c1.yaml": CLIENT + "engine: miredo\nlocal_discovery: enabled\n"})
    assert got == ["c1.yaml:4: local_discovery is not supported by Debian's miredo 1.2.6 "
                   "(engine: miredo)"]


def test_fleet_conflicts(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "defaults.yaml": "roles:\n  client:\n    server: 203.0.113.10\n    netns: ns1\n"
                         "allow_documentation_addresses: true\n",
        "a.yaml": "role: client\nbind_port: 4000\n",
        "b.yaml": "role: client\nbind_port: 4000\nbind_address: 198.18.0.2\n",
        "c.yaml": "role: client\nnetns: ns2\nbind_port: 4000\n",  # other namespace: fine
        "d.yaml": "role: client\nnetns: ns2\ninterface: tun9\n",
        "s1.yaml": "role: server\nnetns: ns3\nserver_bind_address: 203.0.113.10\n",
        "s2.yaml": "role: server\nnetns: ns3\nserver_bind_address: 203.0.113.11\n",
        "off.yaml": "role: client\nenabled: false\nbind_port: 4000\n",  # disabled: ignored
    })
    assert got == [
        "b.yaml:1: interface 'teredo' in netns ns1 is also used by a (a.yaml); interface from "
        "built-in default",
        "b.yaml:2: UDP 198.18.0.2:4000 in netns ns1 clashes with a (0.0.0.0:4000)",
        "s2.yaml:3: UDP 203.0.113.11:3544 in netns ns3 clashes with s1 (203.0.113.11:3544)",
    ]


def test_all_problems_of_all_files_at_once(tmp_path: Path) -> None:
    got = problems(tmp_path, {
        "a.yaml": "role: client\nsevrer: 203.0.113.10\n",
        "b.yaml": "role: relay\nmtu: big\n",
        "c.yaml": "role: server\n",
    })
    assert len(got) == 5
    assert {g.split(":")[0] for g in got} == {"a.yaml", "b.yaml", "c.yaml"}


def test_selection(tmp_path: Path) -> None:
    fleet = load_fleet(ROOT / "instances")
    assert resolve(fleet, Selection(names=["client*"]), default_all=False) == ["client1",
                                                                               "client2"]
    assert resolve(fleet, Selection(roles=["relay"], tags=["edge"]),
                   default_all=False) == ["client1", "client2", "relay"]
    assert resolve(fleet, Selection(), default_all=True) == fleet.names
    with pytest.raises(UsageError):
        resolve(fleet, Selection(), default_all=False)
    with pytest.raises(UnknownInstanceError) as exc:
        resolve(fleet, Selection(names=["relay-eu"]), default_all=True)
    assert str(exc.value) == ("unknown instance 'relay-eu'; known: client1, client2, relay, "
                              "server")
    assert exc.value.code == 4
    with pytest.raises(UnknownInstanceError):
        resolve(fleet, Selection(tags=["nope"]), default_all=True)


def test_operator_docs_cover_every_field_and_command() -> None:
    from miredoctl.cli import COMMANDS
    from miredoctl.inventory import FIELDS

    doc = (ROOT / "docs" / "miredoctl.md").read_text()
    assert [f for f in FIELDS if f"| `{f}` |" not in doc] == []
    assert [c for c in COMMANDS if f"| `{c}" not in doc] == []


@pytest.mark.parametrize("name", ["exporter", "supervisord", "reaper", "logstamp"])
def test_names_of_the_managers_own_programs_and_logs_are_reserved(tmp_path: Path,
                                                                   name: str) -> None:
    # `[program:exporter]` and the log folder's supervisord.log, reaper.log... are the
    # manager's: an instance by that name would share its program entry or its log file
    got = problems(tmp_path, {f"{name}.yaml": CLIENT, "c1.yaml": CLIENT})
    assert got == [f"{name}.yaml: instance name '{name}' is reserved for the manager's own "
                   "programs and logs (exporter, logstamp, reaper, supervisord); rename the file"]
