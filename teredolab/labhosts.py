"""`miredoctl lab up --hosts`: the lab's own namespaces as the hosts of a fleet across hosts.

On top of the lab (teredolab/topology.py), the namespaces of the Teredo server, the relay and
the two clients each become a host (teredolab/sshhost.py): a real sshd with its own /run,
reached from this namespace (the controller) over a management link, a /30 per host out of
192.0.2.0/24 (or the top of 198.18.0.0/15 where this machine routes that range itself). Then
a fleet folder is written, committed to git, that puts the lab's roles on those hosts:

    <dir>/fleet/        defaults.yaml, server.yaml, relay.yaml, client1.yaml, client2.yaml
                        (the default fleet of instances/, with `host:` where it has `netns:`:
                        each engine runs in its host's own namespace), hosts.yaml (Ansible's
                        YAML inventory: groups servers, relays, clients), known_hosts (the
                        hosts' keys, pinned)
    <dir>/controller/   id_ed25519: the key the controller logs in with (root on every host)
    <dir>/hosts/NS/     each host's sshd_config, host key, sshd.log, and its agent's folder
    <dir>/hosts.json    what was made (read by `lab status` and `lab down`)

`<dir>` is /var/lib/teredolab/<prefix> (base: env TEREDOLAB_DIR). Not under /run: a host's
sshd sees its own, empty /run, and reads its config from here. The hosts' state folders are
in their own /run (`/run/miredoctl/<namespace>`), named per namespace because every host
shares this machine's /proc, where miredoctl recognises engines by their command lines.

`lab down` (NetnsLab.down) removes all of it: each sshd by PID, the namespaces with whatever
the sessions left running in them, the management links, the controller's SSH master
connections and state folder for this fleet, and `<dir>`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teredolab import sshhost
from teredolab.sshhost import HostError, NsHost
from teredolab.topology import DEFAULT_PREFIX, LabError, LabSpec, check_lab_address

if TYPE_CHECKING:
    from teredolab.topology import NetnsLab

DIR_ENV = "TEREDOLAB_DIR"
DEFAULT_DIR = "/var/lib/teredolab"
HOST_ROLES: tuple[str, ...] = ("srv", "rly", "cli", "cli2")  # in rolling order
GROUPS = {"srv": "servers", "rly": "relays", "cli": "clients", "cli2": "clients"}
MGMT_IF = "mgmt"  # the management link's name inside a host
RECORD = "hosts.json"
GIT_ID = ("-c", "user.name=teredolab", "-c", "user.email=teredolab@example.invalid",
          "-c", "commit.gpgsign=false")


def base_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def lab_dir(prefix: str) -> Path:
    return base_dir() / prefix


def fleet_name(prefix: str) -> str:
    """The generated fleet's `name:` ("mdl-hosts"): per lab, so two labs' fleets never share
    a controller state folder."""
    return re.sub(r"[^a-z0-9_-]", "-", prefix.lower()) + "hosts"


def veth_name(prefix: str, role: str) -> str:
    """The management link's end in this namespace: 15 characters at most whatever the prefix
    (up to 16), the same for a prefix every time (so `down` finds it without the record)."""
    return "tl" + hashlib.sha1(prefix.encode()).hexdigest()[:6] + role


def lab_networks(spec: LabSpec) -> list[ipaddress.IPv4Network]:
    """The lab's own IPv4 networks (inside its namespaces): a management /30 must not overlap
    any of them, or a host would route part of its "internet" to the controller."""
    nets = [ipaddress.IPv4Network(f"{spec.srv_ip1}/{spec.pub4_plen}", strict=False),
            ipaddress.IPv4Network(f"{spec.nat_lan}/{spec.lan_plen}", strict=False),
            ipaddress.IPv4Network(f"{spec.nat2_lan}/{spec.lan_plen}", strict=False)]
    for ip in (spec.srv_ip2, spec.rly_ip4, spec.nat_wan, spec.nat2_wan, spec.cli_ip,
               spec.cli2_ip):
        nets.append(ipaddress.IPv4Network(f"{ip}/{spec.pub4_plen}", strict=False))
    return nets


# ------------------------------------------------------------------------- the fleet's files
def instance_files(spec: LabSpec, host: dict[str, str]) -> dict[str, str]:
    """The lab's roles as instances, each on its host (`host[role]`): instances/ of the
    repository with `host:` for `netns:` (tests/unit/test_labhosts.py holds them together)."""
    return {
        "defaults.yaml": (
            "# The lab's fleet across hosts, written by `miredoctl lab up --hosts` "
            "(teredolab/labhosts.py):\n"
            "# the default fleet of instances/, each instance on the namespace host of its "
            "role.\n"
            f"name: {fleet_name(spec.prefix)}\n"
            "# the lab's \"public\" addresses are documentation ranges: a production fleet "
            "must not allow them\n"
            "allow_documentation_addresses: true\n"
            "all:\n"
            "  engine: teredo-engine     # or \"miredo\" to run Debian's miredo / "
            "miredo-server\n"
            "  syslog_facility: daemon\n"
            "roles:\n"
            "  client:\n"
            f"    server: {spec.srv_ip1}    # the lab's Teredo server (host {host['srv']})\n"
            "    interface: teredo\n"
            "  relay:\n"
            "    interface: teredo\n"
            "    relay_type: cone\n"
            "    mtu: 1280\n"
            "  server:\n"
            "    mtu: 1280\n"),
        "server.yaml": (
            "# The Teredo server: two consecutive public IPv4 addresses, UDP 3544 on both.\n"
            "role: server\n"
            f"host: {host['srv']}\n"
            f"server_bind_address: {spec.srv_ip1}\n"
            f"server_bind_address2: {spec.srv_ip2}\n"
            "tags: [core]\n"),
        "relay.yaml": (
            "# The Teredo relay: routes 2001::/32 between the IPv6 internet and Teredo "
            "clients.\n"
            "role: relay\n"
            f"host: {host['rly']}\n"
            f"bind_address: {spec.rly_ip4}\n"
            f"bind_port: {spec.relay_port}\n"
            "tags: [core]\n"),
        "client1.yaml": (
            f"# Teredo client behind NAT #1 ({spec.cli_ip} -> {spec.nat_wan}).\n"
            "role: client\n"
            f"host: {host['cli']}\n"
            "tags: [edge]\n"),
        "client2.yaml": (
            f"# Teredo client behind NAT #2 ({spec.cli2_ip} -> {spec.cli2_wan}).\n"
            "role: client\n"
            f"host: {host['cli2']}\n"
            "tags: [edge]\n"),
    }


def hosts_yaml(hosts: dict[str, NsHost], client_key: Path, python: str,
               interpreter: str) -> str:
    lines = [
        "# The lab's namespaces as hosts, written by `miredoctl lab up --hosts`: each runs its "
        "own sshd",
        "# (and has its own /run); Ansible's YAML inventory format (`ansible -i hosts.yaml all "
        "-m ping`).",
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {client_key}",
        f"    ansible_python_interpreter: {interpreter}",
        "    # the hosts share this machine's filesystem outside /run: the controller's own "
        "install",
        f"    miredoctl_python: {python}",
        "  children:",
    ]
    for group in dict.fromkeys(GROUPS[r] for r in hosts):
        lines += [f"    {group}:", "      hosts:"]
        for role, h in hosts.items():
            if GROUPS[role] != group:
                continue
            lines += [f"        {h.name}:",
                      f"          ansible_host: {h.address}",
                      # per host: all hosts share /proc (see the module docstring)
                      f"          miredoctl_state: /run/miredoctl/{h.netns}",
                      f"          miredoctl_root: {h.root / 'agent'}"]
    return "\n".join(lines) + "\n"


def _git(fleet: Path, *args: str) -> None:
    cp = subprocess.run(["git", *GIT_ID, "-C", str(fleet), *args], capture_output=True,
                        text=True, timeout=30, check=False)
    if cp.returncode != 0:
        raise LabError(f"git {' '.join(args)} in {fleet}: "
                       f"{(cp.stderr or cp.stdout).strip().splitlines()[-1:]}")


def write_fleet(fleet: Path, files: dict[str, str]) -> None:
    fleet.mkdir(parents=True, mode=0o755)
    for name, text in files.items():
        (fleet / name).write_text(text)
    _git(fleet, "init", "-q")
    _git(fleet, "add", "-A")
    _git(fleet, "commit", "-qm", "the lab's roles on the lab's namespace hosts")


# ------------------------------------------------------------------------------ up and down
class LabHosts:
    """The hosts of one lab (by prefix): `up()` after the lab is built, `remove()` before its
    namespaces go."""

    def __init__(self, lab: NetnsLab) -> None:
        self.lab = lab
        self.prefix = lab.spec.prefix
        self.dir = lab_dir(self.prefix)

    @property
    def fleet(self) -> Path:
        return self.dir / "fleet"

    @property
    def client_key(self) -> Path:
        return self.dir / "controller" / "id_ed25519"

    @property
    def record(self) -> Path:
        return self.dir / RECORD

    def roles(self) -> list[str]:
        return [r for r in HOST_ROLES if r in self.lab.spec.roles()]

    def up(self) -> dict[str, Any]:
        """Make the hosts and the fleet; raises LabError (the caller removes the lab, and
        with it whatever was made here)."""
        reason = sshhost.missing_tools() or (None if shutil.which("git") else
                                             "lab up --hosts needs git (the fleet is a commit)")
        if reason:
            raise LabError(reason)
        if self.lab.spec.with_client2 is False or self.lab.spec.nat2_type == "shared":
            raise LabError("--hosts needs the reference lab (two clients behind two NATs)")
        base_dir().mkdir(parents=True, exist_ok=True, mode=0o755)
        self.dir.mkdir(mode=0o700)
        sshhost.make_client_key(self.client_key, f"teredolab {self.prefix} controller")
        hosts: dict[str, NsHost] = {}
        try:
            blocks = sshhost.pick_blocks(len(self.roles()), lab_networks(self.lab.spec))
            for role, block in zip(self.roles(), blocks, strict=True):
                ns = self.lab.ns(role)
                h = sshhost.new_host(ns, ns, veth_name(self.prefix, role), block,
                                     self.dir / "hosts" / ns, ifname=MGMT_IF)
                check_lab_address(f"{h.address}/30")
                hosts[role] = h
                self._save(hosts)  # before building it: down() removes a half-built host
                sshhost.build(h, self.client_key, create_netns=False)
            self._save(hosts)
            known = "".join(h.known_hosts_line + "\n" for h in hosts.values())
            interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() \
                else sys.executable
            files = instance_files(self.lab.spec, {r: h.name for r, h in hosts.items()})
            files["hosts.yaml"] = hosts_yaml(hosts, self.client_key, sys.executable,
                                             interpreter)
            files["known_hosts"] = ("# the lab hosts' keys, made by `miredoctl lab up "
                                    "--hosts`, pinned\n" + known)
            write_fleet(self.fleet, files)
        except (HostError, OSError) as e:
            raise LabError(str(e)) from e
        info = self.info()
        assert info is not None
        return info

    def _save(self, hosts: dict[str, NsHost]) -> None:
        doc = {"prefix": self.prefix, "fleet": str(self.fleet),
               "fleet_name": fleet_name(self.prefix), "controller_key": str(self.client_key),
               "hosts": {role: h.to_json() for role, h in hosts.items()}}
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.record)

    def _load(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _hosts(self, doc: dict[str, Any] | None) -> list[NsHost]:
        """The hosts of the record, and for every role without one the name `veth_name` gives
        (a lab whose record was lost still loses its links)."""
        out = []
        recorded = (doc or {}).get("hosts") or {}
        for role in HOST_ROLES:
            entry = recorded.get(role)
            ns = f"{self.prefix}{role}"
            if isinstance(entry, dict):
                out.append(NsHost(name=entry.get("name", ns), netns=entry.get("netns", ns),
                                  veth=entry.get("veth", veth_name(self.prefix, role)),
                                  address=entry.get("address", ""),
                                  controller_address=entry.get("controller_address", ""),
                                  root=Path(entry.get("root") or self.dir / "hosts" / ns),
                                  ifname=entry.get("ifname", MGMT_IF)))
            else:
                out.append(NsHost(ns, ns, veth_name(self.prefix, role), "", "",
                                  self.dir / "hosts" / ns, MGMT_IF))
        return out

    def info(self) -> dict[str, Any] | None:
        """What `lab status` and `lab up --hosts` show: the fleet, each host and its sshd."""
        doc = self._load()
        if doc is None:
            return None
        hosts = {}
        for role, entry in (doc.get("hosts") or {}).items():
            h = next((x for x in self._hosts(doc) if x.netns == entry.get("netns")), None)
            hosts[role] = {**entry, "sshd_pid": h.sshd_pid() if h else None,
                           "group": GROUPS.get(role)}
        return {"dir": str(self.dir), "fleet": doc.get("fleet"),
                "fleet_name": doc.get("fleet_name"),
                "controller_key": doc.get("controller_key"), "hosts": hosts}

    def remove(self) -> list[str]:
        """Everything `up` made (also half of it, or what an earlier run with this prefix
        left); returns what could not be removed. The namespaces themselves are the lab's:
        NetnsLab.down deletes them (and whatever still runs in them) afterwards."""
        doc = self._load()
        errors: list[str] = []
        links = sshhost.links()
        for h in self._hosts(doc):
            if doc is not None or h.veth in links:
                errors += sshhost.stop(h, delete_netns=False)
        if not self.dir.exists():
            return errors
        errors += self._forget_controller((doc or {}).get("fleet_name")
                                          or fleet_name(self.prefix))
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.dir.exists():
                errors.append(f"{self.dir}: could not be removed")
        try:
            base_dir().rmdir()  # the last lab's: nothing of teredolab left behind
        except OSError:
            pass
        return errors

    def _forget_controller(self, name: str) -> list[str]:
        """The controller's side of this fleet, in miredoctl's default folders for its name:
        the SSH master connections (ended with `ssh -O exit`, so none outlives its host) and
        the state folders, unless a supervisord of that fleet runs here."""
        from miredoctl import fleets
        from miredoctl.state import StatePaths

        paths = StatePaths(fleets.run_base() / name, fleets.lib_base() / name,
                           fleets.log_base() / name, name=name)
        control = paths.root / "ssh"
        if control.is_dir() and shutil.which("ssh"):
            for sock in control.iterdir():
                subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab"],
                               capture_output=True, timeout=10, check=False)
        if fleets.supervisord_alive(paths) is not None:
            return [f"fleet {name}: its supervisord runs on this machine: `miredoctl --fleet "
                    f"{self.fleet} down --all`, then `lab down` again"]
        record = paths.lib_root / "fleet.json"
        try:
            folder = json.loads(record.read_text()).get("folder")
        except (OSError, ValueError, AttributeError):
            folder = None
        if folder not in (None, str(self.fleet)):
            return []  # another fleet took this name: not ours to remove
        for d in (paths.root, paths.lib_root, paths.logdir):
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
        return []


def usage(prefix: str, info: dict[str, Any], spec: LabSpec) -> str:
    """How to use the hosts, as `lab up --hosts` prints it."""
    hosts = info["hosts"]
    opt = "" if prefix == DEFAULT_PREFIX else f" --prefix {prefix}"
    ansible = Path(sys.executable).with_name("ansible-playbook").exists() or \
        shutil.which("ansible-playbook")
    note = [] if ansible else ["  (the controller needs ansible-core: "
                               "pip install 'teredo-fleet[remote]')"]
    rows = [f"  {entry['name']:<10} {entry['address']:<15} {entry.get('group') or '':8} "
            f"sshd pid {entry.get('sshd_pid') or '-'}" for entry in hosts.values()]
    return "\n".join([
        f"hosts: {len(hosts)} namespaces of the lab run an sshd each (own /run, key pinned), "
        "reached over a management link:",
        *rows,
        f"fleet across them (git, hosts.yaml, known_hosts): {info['fleet']}",
        f"  export MIREDOCTL_FLEET={info['fleet']}",
        "  miredoctl up --all              # every host, one at a time, through ansible-core",
        "  miredoctl wait && miredoctl status",
        f"  ip netns exec {prefix}cli ping {spec.v6_host}    # client1 -> IPv6 host, via the "
        "relay",
        f"  miredoctl down --all && miredoctl lab down{opt}",
        *note,
    ])
