"""`miredoctl lab up --hosts` without building anything: the fleet it writes (the default fleet of
instances/ on the lab's namespace hosts), its names, and where management links may go."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from miredoctl import fleets
from miredoctl.inventory import load_fleet
from miredoctl.remote import hosts as hosts_mod
from teredolab import labhosts, sshhost
from teredolab.topology import DEFAULT_PREFIX, LabSpec

ROOT = Path(__file__).resolve().parents[2]
HOSTS = {r: f"{DEFAULT_PREFIX}{r}" for r in labhosts.HOST_ROLES}


def _fake_hosts(tmp_path: Path) -> dict[str, sshhost.NsHost]:
    blocks = [ipaddress.IPv4Network(f"192.0.2.{4 * i}/30") for i in range(1, 5)]
    return {r: sshhost.new_host(HOSTS[r], HOSTS[r], labhosts.veth_name(DEFAULT_PREFIX, r), b,
                                tmp_path / "hosts" / HOSTS[r], ifname=labhosts.MGMT_IF)
            for r, b in zip(labhosts.HOST_ROLES, blocks, strict=True)}


def write(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    files = labhosts.instance_files(LabSpec(), HOSTS)
    files["hosts.yaml"] = labhosts.hosts_yaml(_fake_hosts(tmp_path), tmp_path / "key",
                                              "/usr/bin/python3", "/usr/bin/python3")
    for name, text in files.items():
        (fleet / name).write_text(text)
    return fleet


def test_the_fleet_is_instances_with_host_for_netns(tmp_path: Path) -> None:
    """Every instance of instances/ is there, the same in every key, except that `netns: NS`
    became `host: NS` (the host whose namespace NS is); defaults.yaml only adds the name."""
    fleet = write(tmp_path)
    shipped = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / "instances").glob("*.yaml")}
    made = {p.name: yaml.safe_load(p.read_text()) for p in fleet.glob("*.yaml")
            if p.name != "hosts.yaml"}
    assert made.keys() == shipped.keys()
    for name, doc in shipped.items():
        if "netns" in doc:
            doc["host"] = doc.pop("netns")
        if name == "defaults.yaml":
            doc["name"] = "mdl-hosts"
        assert made[name] == doc, name


def test_the_fleet_loads_with_every_instance_on_its_host(tmp_path: Path) -> None:
    fleet = write(tmp_path)
    f = load_fleet(fleet)
    assert {n: i.host for n, i in f.instances.items()} == {
        "server": "mdl-srv", "relay": "mdl-rly", "client1": "mdl-cli", "client2": "mdl-cli2"}
    assert all(i.netns is None for i in f.instances.values())
    h = hosts_mod.load_checked(fleet)
    assert list(h.hosts) == ["mdl-srv", "mdl-rly", "mdl-cli", "mdl-cli2"]  # rolling order
    assert h.expand(["clients"]) == ["mdl-cli", "mdl-cli2"]
    srv = h.hosts["mdl-srv"].vars
    assert srv["ansible_host"] == "192.0.2.6" and srv["ansible_user"] == "root"
    # per host: every host shares this machine's /proc, where engines are told apart by path
    assert {e.vars["miredoctl_state"] for e in h.hosts.values()} == {
        f"/run/miredoctl/{n}" for n in HOSTS.values()}
    assert len({e.vars["miredoctl_root"] for e in h.hosts.values()}) == 4
    assert fleets.fleet_name(fleet, None) == "mdl-hosts"


@pytest.mark.parametrize("prefix", ["mdl-", "k1a2b-", "A.very_long-pfx1"])
def test_names_fit_interfaces_and_fleet_names(prefix: str) -> None:
    assert fleets.name_problem(labhosts.fleet_name(prefix)) is None
    names = {labhosts.veth_name(prefix, r) for r in labhosts.HOST_ROLES}
    assert len(names) == 4 and all(len(n) <= 15 for n in names)
    assert labhosts.veth_name(prefix, "srv") == labhosts.veth_name(prefix, "srv")


def test_management_blocks_avoid_routes_addresses_and_the_lab(monkeypatch) -> None:
    """This machine's LAN in 192.0.2.0/24 (as on a CI runner) pushes the links to the top of
    198.18.0.0/15; the lab's own networks are never used."""
    lan = ipaddress.IPv4Network("192.0.2.0/24")
    monkeypatch.setattr(sshhost, "_taken", lambda: [lan])
    free = sshhost.free_blocks(labhosts.lab_networks(LabSpec()))
    assert free and all(b.subnet_of(sshhost.MGMT_NETS[1]) for b in free)
    monkeypatch.setattr(sshhost, "_taken", lambda: [ipaddress.IPv4Network("192.0.2.8/30")])
    free = sshhost.free_blocks()
    assert ipaddress.IPv4Network("192.0.2.8/30") not in free
    assert ipaddress.IPv4Network("192.0.2.0/30") not in free  # .0-.3 never
    assert ipaddress.IPv4Network("192.0.2.4/30") in free
    picked = sshhost.pick_blocks(4)
    assert len(set(picked)) == 4
    monkeypatch.setattr(sshhost, "_taken", lambda: [])
    lab = labhosts.lab_networks(LabSpec(nat_lan="192.0.2.1", cli_ip="192.0.2.2"))
    free = sshhost.free_blocks(lab)
    assert not any(b.overlaps(net) for b in free for net in lab)
