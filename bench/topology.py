"""The network the benchmark runs in: the project's lab (`miredoctl.lab`) or a local copy of it.

The benchmark needs five roles of the lab: Teredo server (srv), relay (rly), native IPv6 host
(v6), a restricted NAT (nat) and a client behind it (cli), all joined by the two "internet"
bridges in `inet`. When `miredoctl.lab` is importable it builds them; otherwise `LocalTopology`
builds the same subset, so that the benchmark does not wait for the demo network to exist.
Either way `check_plan` verifies that the addresses the daemons and traffic use are really
there, because a silent mismatch would benchmark nothing.

Network safety: every link is created directly inside the lab's namespaces (veth peers are
named into their namespace at creation), nothing is configured in the root namespace, and only
documentation / benchmark ranges are used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol

from bench.plan import PLAN, AddressPlan

ROLES = ("inet", "srv", "rly", "v6", "nat", "cli")


class Topology(Protocol):
    """What the benchmark uses of a lab."""

    def up(self) -> None: ...
    def down(self) -> None: ...
    def ns(self, role: str) -> str: ...


class TopologyError(RuntimeError):
    """The lab could not be built or does not match the address plan."""


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    res = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise TopologyError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def netns_list() -> set[str]:
    out = _run(["ip", "netns", "list"])
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def kill_netns_processes(ns: str) -> None:
    """Stop whatever still runs in one of OUR namespaces (unique names, so only our processes)."""
    try:
        pids = [int(p) for p in _run(["ip", "netns", "pids", ns]).split()]
    except TopologyError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class LocalTopology:
    """The benchmark's own build of the lab subset (used when `miredoctl.lab` is absent)."""

    def __init__(self, prefix: str, plan: AddressPlan = PLAN) -> None:
        self.prefix = prefix
        self.plan = plan
        self.created: list[str] = []

    def ns(self, role: str) -> str:
        if role not in ROLES:
            raise KeyError(f"unknown lab role {role!r} (have {', '.join(ROLES)})")
        return f"{self.prefix}{role}"

    def _sysctl(self, role: str, *settings: str) -> None:
        _run(["ip", "netns", "exec", self.ns(role), "sysctl", "-qw", *settings])

    def _veth(self, role_a: str, if_a: str, role_b: str, if_b: str) -> None:
        _run(["ip", "link", "add", if_a, "netns", self.ns(role_a), "type", "veth",
              "peer", "name", if_b, "netns", self.ns(role_b)])

    def _ip(self, role: str, *args: str) -> None:
        _run(["ip", "-n", self.ns(role), *args])

    def up(self) -> None:
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        p = self.plan
        for role in ROLES:
            name = self.ns(role)
            _run(["ip", "netns", "add", name])
            self.created.append(name)
            self._ip(role, "link", "set", "lo", "up")
            self._sysctl(role, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                         "net.ipv6.conf.default.accept_dad=0")
        self._sysctl("inet", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
        for br in ("br4", "br6"):
            self._ip("inet", "link", "add", br, "type", "bridge", "stp_state", "0",
                     "forward_delay", "0", "mcast_snooping", "0")
            self._ip("inet", "link", "set", br, "up")

        def public4(role: str, port: str, *addrs: str) -> None:
            self._veth(role, "inet4", "inet", port)
            self._ip("inet", "link", "set", port, "master", "br4", "up")
            self._sysctl(role, "net.ipv6.conf.inet4.disable_ipv6=1")
            for a in addrs:
                self._ip(role, "addr", "add", f"{a}/{p.pub4_plen}", "dev", "inet4")
            self._ip(role, "link", "set", "inet4", "up")
            # one L2 segment for every public host: an on-link default route
            self._ip(role, "route", "add", "default", "dev", "inet4")

        def public6(role: str, port: str, ifname: str, addr: str) -> None:
            self._veth(role, ifname, "inet", port)
            self._ip("inet", "link", "set", port, "master", "br6", "up")
            self._ip(role, "addr", "add", f"{addr}/{p.v6_plen}", "dev", ifname, "nodad")
            self._ip(role, "link", "set", ifname, "up")

        public4("srv", "srv4", p.srv_ip1, p.srv_ip2)
        public6("srv", "srv6", "inet6", p.srv_ip6)  # the server forwards connectivity tests
        public4("rly", "rly4", p.rly_ip4)
        public6("rly", "rly6", "inet6", p.rly_ip6)
        self._sysctl("rly", "net.ipv6.conf.all.forwarding=1")
        public6("v6", "v6", "inet6", p.v6_host)
        self._ip("v6", "-6", "route", "add", f"{p.teredo_prefix}/32", "via", p.rly_ip6)

        self._veth("nat", "wan", "inet", "nat4")
        self._ip("inet", "link", "set", "nat4", "master", "br4", "up")
        self._sysctl("nat", "net.ipv6.conf.wan.disable_ipv6=1", "net.ipv4.ip_forward=1")
        self._ip("nat", "addr", "add", f"{p.nat_wan}/{p.pub4_plen}", "dev", "wan")
        self._ip("nat", "link", "set", "wan", "up")
        self._ip("nat", "route", "add", "default", "dev", "wan")
        self._veth("nat", "lan", "cli", "lan")
        self._sysctl("nat", "net.ipv6.conf.lan.disable_ipv6=1")
        self._sysctl("cli", "net.ipv6.conf.lan.disable_ipv6=1")
        self._ip("nat", "addr", "add", f"{p.nat_lan}/{p.lan_plen}", "dev", "lan")
        self._ip("nat", "link", "set", "lan", "up")
        self._ip("cli", "addr", "add", f"{p.cli_ip}/{p.lan_plen}", "dev", "lan")
        self._ip("cli", "link", "set", "lan", "up")
        self._ip("cli", "route", "add", "default", "via", p.nat_lan)
        # Restricted (port-restricted cone) NAT: masquerade, and new inbound packets dropped
        # in INPUT so that an unsolicited packet never leaves a confirmed conntrack entry.
        lan_net = f"{p.nat_lan.rsplit('.', 1)[0]}.0/{p.lan_plen}"
        rules = f"""
table ip bench_nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ip saddr {lan_net} masquerade
  }}
  chain forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
  }}
  chain input {{ type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" icmp type echo-request accept
    iifname "wan" drop
  }}
}}
"""
        _run(["ip", "netns", "exec", self.ns("nat"), "nft", "-f", "-"], stdin=rules)

    def down(self) -> None:
        existing = netns_list()
        for name in reversed(self.created):
            if name in existing:
                kill_netns_processes(name)
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self.created.clear()


class ProjectLab:
    """Adapter over `miredoctl.lab.Lab`, the project's demo/test network."""

    def __init__(self, prefix: str) -> None:
        from miredoctl.lab import Lab, LabSpec

        # the second NAT and client are not needed: one client carries the traffic
        self.lab = Lab(LabSpec(prefix=prefix, with_client2=False))

    def up(self) -> None:
        self.lab.up()

    def down(self) -> None:
        self.lab.down()

    def ns(self, role: str) -> str:
        return self.lab.ns(role)


def make_topology(prefix: str, which: str = "auto") -> Topology:
    """`which`: "project" (miredoctl.lab), "local" (LocalTopology), "auto" (project if any)."""
    if which in ("auto", "project"):
        try:
            return ProjectLab(prefix)
        except ImportError:
            if which == "project":
                raise TopologyError("miredoctl.lab is not importable (use --topology local)")
    return LocalTopology(prefix)


def check_plan(topo: Topology, plan: AddressPlan = PLAN) -> None:
    """Fail loudly if an address the benchmark relies on is missing from its role."""
    wanted = [("srv", plan.srv_ip1), ("srv", plan.srv_ip2), ("srv", plan.srv_ip6),
              ("rly", plan.rly_ip4), ("rly", plan.rly_ip6), ("v6", plan.v6_host),
              ("nat", plan.nat_wan), ("cli", plan.cli_ip)]
    for role, addr in wanted:
        out = _run(["ip", "-n", topo.ns(role), "-o", "addr", "show"])
        if f" {addr}/" not in out:
            raise TopologyError(f"lab role {role} ({topo.ns(role)}) lacks address {addr}")
