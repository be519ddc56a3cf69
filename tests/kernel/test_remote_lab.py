"""The lab as hosts, end to end: `miredoctl lab up --hosts` makes the lab's server, relay and
client namespaces hosts (a real sshd each, with its own /run), and ONE controller command,
`miredoctl up --all` through the real ansible-core, brings the lab's fleet up across them; the
tunnels then carry the same pings as the fleet on one machine (test_miredoctl_fleet.py).

Everything runs through the commands an operator types (README, docs/miredoctl.md "The lab as
hosts"), and `miredoctl lab down` removes it all, also when the test fails half way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teredolab import labhosts, netns
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel.conftest import _missing_tools, unique_prefix
from tests.kernel.harness import ping
from tests.kernel.sshhosts import missing

pytestmark = pytest.mark.kernel

ROLES = {"srv": "server", "rly": "relay", "cli": "client1", "cli2": "client2"}


def miredoctl(*args: str, fleet: str | None = None, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIREDOCTL_", "TEREDOLAB_"))}
    if fleet is not None:
        env["MIREDOCTL_FLEET"] = fleet
    proc = subprocess.run([sys.executable, "-m", "miredoctl.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"exit {proc.returncode}: {proc.stdout}\n{proc.stderr}")


def same_netns(pid: int, ns: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino


def test_lab_fleet_across_namespace_hosts() -> None:
    reason = _missing_tools() or missing()
    if reason:
        pytest.skip(reason)
    prefix = unique_prefix()
    lab = NetnsLab(LabSpec(prefix=prefix))
    ns = {role: lab.ns(role) for role in ROLES}
    fleet: str | None = None
    sshd_pids: list[int] = []
    try:
        up = miredoctl("lab", "up", "--hosts", "--prefix", prefix, "--json", timeout=120)
        assert up.returncode == 0, up.stderr
        info = as_json(up)["hosts"]
        fleet = info["fleet"]
        assert {role: (h["name"], h["group"]) for role, h in info["hosts"].items()} == {
            "srv": (ns["srv"], "servers"), "rly": (ns["rly"], "relays"),
            "cli": (ns["cli"], "clients"), "cli2": (ns["cli2"], "clients")}
        sshd_pids = [h["sshd_pid"] for h in info["hosts"].values()]
        assert all(sshd_pids) and all(same_netns(p, ns[r]) for r, p in
                                      zip(info["hosts"], sshd_pids, strict=True))
        # the fleet is committed, its host keys pinned, and no instance names a namespace
        folder = Path(fleet)
        assert subprocess.run(["git", "-C", fleet, "status", "--porcelain"], capture_output=True,
                              text=True, check=True).stdout == ""
        assert len((folder / "known_hosts").read_text().split("ssh-ed25519")) == 5
        assert not any("netns:" in p.read_text() for p in folder.glob("*.yaml"))
        status = miredoctl("lab", "status", "--prefix", prefix)
        assert status.returncode == 0 and f"hosts (fleet {fleet}):" in status.stdout, status

        # ONE controller command brings the whole lab fleet up, host by host
        up = miredoctl("up", "--all", "--json", fleet=fleet)
        doc = as_json(up)
        assert up.returncode == 0, doc
        assert [(h["host"], h["outcome"]) for h in doc["hosts"]] == [
            (ns[r], "done") for r in ("srv", "rly", "cli", "cli2")], doc
        assert sorted((r["host"], r["name"], r["action"]) for r in doc["results"]) == sorted(
            (ns[r], name, "started") for r, name in ROLES.items())
        wait = miredoctl("wait", "--timeout", "60", fleet=fleet)
        assert wait.returncode == 0, wait.stdout + wait.stderr

        st = miredoctl("status", "--json", fleet=fleet)
        assert st.returncode == 0, st.stdout + st.stderr
        rows = {r["name"]: r for r in as_json(st)["instances"]}
        assert {n: (r["host"], r["state"]) for n, r in rows.items()} == {
            name: (ns[role], "RUNNING") for role, name in ROLES.items()}, rows
        for role, name in ROLES.items():
            pid = rows[name]["pid"]
            # each engine runs in its host's own namespace, its state in the host's own /run
            assert same_netns(pid, ns[role]), (name, role)
            assert Path(f"/proc/{pid}/root/run/miredoctl/{ns[role]}/configs/{name}.conf"
                        ).is_file()
            assert not Path(f"/run/miredoctl/{ns[role]}").exists()
        for name, wan in (("client1", lab.spec.nat_wan), ("client2", lab.spec.nat2_wan)):
            assert rows[name]["tunnel_state"] == "qualified", rows[name]
            assert rows[name]["address"].startswith("2001:0:cb00:710a:")  # server 203.0.113.10
            assert rows[name]["mapped"].split(":")[0] == wan
        assert rows["server"]["bound"] == ["203.0.113.10:3544", "203.0.113.11:3544"]
        text = miredoctl("status", fleet=fleet).stdout.splitlines()
        assert text[0].split()[:3] == ["NAME", "HOST", "ROLE"], text
        assert {ln.split()[0]: ln.split()[1] for ln in text[1:]} == {
            name: ns[role] for role, name in ROLES.items()}, text

        # the tunnels carry traffic: client -> native IPv6 host (via the relay), client -> client
        for dst in (lab.spec.v6_host, rows["client2"]["address"]):
            got = ping(lab, "cli", dst, count=3, interval=0.3)
            assert got.received == 3, got.output

        down = miredoctl("down", "--all", "--json", fleet=fleet)
        assert down.returncode == 0, down.stdout + down.stderr
        st = miredoctl("status", "--json", fleet=fleet)
        assert {r["state"] for r in as_json(st)["instances"]} == {"STOPPED"}, st.stdout
    finally:
        # MIREDOCTL_FLEET still names the lab's fleet: `lab` does not mind
        down = miredoctl("lab", "down", "--prefix", prefix, fleet=fleet, timeout=120)
        if down.returncode != 0:  # never leave the lab behind, whatever went wrong
            lab.down()
    assert down.returncode == 0, down.stderr
    # nothing of it is left: namespaces, management links, sshds, files, controller state
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    assert not any(labhosts.veth_name(prefix, r) + "@" in links for r in ROLES), links
    assert not any(netns.alive(p) for p in sshd_pids)
    assert not labhosts.lab_dir(prefix).exists()
    assert not Path("/run/miredoctl", labhosts.fleet_name(prefix)).exists()
