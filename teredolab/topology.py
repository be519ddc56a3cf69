"""The lab network: a Teredo server, relay, native IPv6 host, NATs and clients, each in its own
network namespace; used by `miredoctl lab`/`demo`, the kernel tests and the benchmark.

Topology (namespace names are `<prefix><role>`):

    inet   the two "internets": bridges br4 (IPv4) and br6 (IPv6), no addresses
    srv    Teredo server: two consecutive public IPv4 on br4, native IPv6 on br6
    rly    Teredo relay: public IPv4 on br4, native IPv6 on br6, IPv6 forwarding on
    v6     native IPv6-only host on br6, route to the Teredo prefix via the relay
    nat    NAT #1: wan on br4, lan to `cli`  (nftables masquerade)
    cli    client #1 behind NAT #1
    nat2   NAT #2 and `cli2` behind it (optional, for client-to-client paths); with
           `nat2_type="shared"` there is no NAT #2: `cli2` sits on a second LAN of NAT #1
           (`lan2`), so both clients share one NAT that does not hairpin (RFC 6081 §3.5)

All public IPv4 hosts share one L2 segment with an on-link default route, so no router
namespace is needed and no TTL is lost.  Why the pieces look as they do (server needs IPv6,
relay needs forwarding, the NAT's INPUT drop, nodad, ...) is explained next to each step.

Safety: nothing is ever created in the root namespace (veths are created directly inside
their target namespaces with `ip -n`), and a spec whose addresses leave the documentation
ranges is refused before anything is touched.  The one exception is `up(hosts=True)`
(teredolab/labhosts.py): one management link per host, a /30 that no route or address of the
root namespace overlaps, so that the controller there reaches each host's sshd.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from teredolab import netns
from teredolab.netns import NetnsError

# The one default prefix: `miredoctl lab` and the demo use it, and the default fleet in
# instances/ names its namespaces (mdl-srv, mdl-cli, ...). Tests and the benchmark always pass
# their own, so they never touch a demo's lab.
DEFAULT_PREFIX = "mdl-"
ROLES: tuple[str, ...] = ("inet", "srv", "rly", "nat", "nat2", "cli", "cli2", "v6")
NAT_TYPES: tuple[str, ...] = ("restricted", "restricted-nofw", "symmetric", "fullcone",
                              "symmetric-sequential", "symmetric-preserving", "shared",
                              "symmetric-upnp")
"""`symmetric` allocates random ports; the `symmetric-*` kinds are the other RFC 6081 ones
(`symmetric-upnp`: `symmetric` plus the nftables chains a UPnP IGD fills, teredolab.igd);
`shared` is for `nat2_type` only (see the module docstring)."""
SEQUENTIAL_FIRST_PORT = 20000
SEQUENTIAL_PORTS = 256
"""The sequential NAT hands out 20000-20255 in turn, then starts again."""

# Where lab addresses may come from.  The machine's own interface and its package proxy may
# sit in documentation ranges too, which is why the lab never configures the root namespace.
ALLOWED_V4 = tuple(ipaddress.IPv4Network(n) for n in
                   ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15"))
ALLOWED_V6 = ipaddress.IPv6Network("2001:db8::/32")
TEREDO_STD = ipaddress.IPv6Network("2001::/32")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$")


class LabError(RuntimeError):
    """Building, checking or removing the lab failed; `str()` is one line naming the step."""


@dataclass(frozen=True)
class LabSpec:
    """Everything that shapes one lab.  Defaults are the reference lab's address plan."""

    prefix: str = DEFAULT_PREFIX
    nat_type: str = "restricted"
    nat2_type: str = "restricted"
    with_client2: bool = True
    server_v6: bool = True
    # "IPv4 internet" (one L2 segment)
    pub4_plen: int = 24
    srv_ip1: str = "203.0.113.10"
    srv_ip2: str = "203.0.113.11"
    rly_ip4: str = "203.0.113.20"
    relay_port: int = 3545
    nat_wan: str = "198.51.100.1"
    nat2_wan: str = "198.51.100.2"
    # LANs behind the NATs
    lan_plen: int = 24
    nat_lan: str = "198.18.0.1"
    cli_ip: str = "198.18.0.2"
    nat2_lan: str = "198.19.0.1"
    cli2_ip: str = "198.19.0.2"
    # "IPv6 internet"
    v6_plen: int = 64
    srv_ip6: str = "2001:db8:1::10"
    rly_ip6: str = "2001:db8:1::20"
    v6_host: str = "2001:db8:1::100"
    # Teredo
    teredo_prefix: str = "2001:0::"
    teredo_if: str = "teredo"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse a spec that could leak out of the documentation ranges (or is malformed)."""
        if not _PREFIX_RE.match(self.prefix):
            raise LabError(f"LabSpec.prefix={self.prefix!r}: use 1-16 characters of "
                           "[A-Za-z0-9_.-], starting with a letter or digit")
        for field in ("nat_type", "nat2_type"):
            if getattr(self, field) not in NAT_TYPES:
                raise LabError(f"LabSpec.{field}={getattr(self, field)!r}: "
                               f"not one of {', '.join(NAT_TYPES)}")
        if self.nat_type == "shared":
            raise LabError("LabSpec.nat_type='shared': only NAT 2 can be shared (with NAT 1)")
        for field in ("srv_ip1", "srv_ip2", "rly_ip4", "nat_wan", "nat2_wan",
                      "nat_lan", "cli_ip", "nat2_lan", "cli2_ip"):
            value = getattr(self, field)
            try:
                ip4 = ipaddress.IPv4Address(value)
            except ValueError:
                raise LabError(f"LabSpec.{field}={value!r}: not an IPv4 address")
            if not any(ip4 in net for net in ALLOWED_V4):
                raise LabError(f"LabSpec.{field}={value}: outside the lab ranges "
                               "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15)")
        for field in ("srv_ip6", "rly_ip6", "v6_host"):
            value = getattr(self, field)
            try:
                ip6 = ipaddress.IPv6Address(value)
            except ValueError:
                raise LabError(f"LabSpec.{field}={value!r}: not an IPv6 address")
            if ip6 not in ALLOWED_V6:
                raise LabError(f"LabSpec.{field}={value}: outside 2001:db8::/32")
        net = self.teredo_network
        if net != TEREDO_STD and not net.subnet_of(ALLOWED_V6):
            raise LabError(f"LabSpec.teredo_prefix={self.teredo_prefix}: "
                           "use 2001:0:: or a /32 inside 2001:db8::/32")
        for field, top in (("pub4_plen", 32), ("lan_plen", 32), ("v6_plen", 128)):
            value = getattr(self, field)
            if not 8 <= value <= top - 2:
                raise LabError(f"LabSpec.{field}={value}: out of range")
        if not 0 <= self.relay_port <= 65535:
            raise LabError(f"LabSpec.relay_port={self.relay_port}: not a UDP port")
        if not 1 <= len(self.teredo_if) <= 15:
            raise LabError(f"LabSpec.teredo_if={self.teredo_if!r}: interface names are 1-15 chars")

    @property
    def teredo_network(self) -> ipaddress.IPv6Network:
        try:
            return ipaddress.IPv6Network(f"{self.teredo_prefix}/32", strict=False)
        except ValueError:
            raise LabError(f"LabSpec.teredo_prefix={self.teredo_prefix!r}: not an IPv6 prefix")

    def roles(self) -> tuple[str, ...]:
        """Roles this spec builds (nat2/cli2 only with a second client)."""
        if self.with_client2 and self.nat2_type == "shared":
            return tuple(r for r in ROLES if r != "nat2")
        if self.with_client2:
            return ROLES
        return tuple(r for r in ROLES if r not in ("nat2", "cli2"))

    @property
    def cli2_wan(self) -> str:
        """The public IPv4 `cli2` is seen from: NAT #2's, or NAT #1's when shared."""
        return self.nat_wan if self.nat2_type == "shared" else self.nat2_wan

    def replace(self, **changes: Any) -> LabSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CheckResult:
    """One plain reachability probe of `NetnsLab.check()`."""

    description: str
    ok: bool


class NetnsLab:
    """One lab of real namespaces, veths and NATs (tests/sim simulates a network instead):
    build it with `up()`, remove it with `down()` (or use `with`)."""

    def __init__(self, spec: LabSpec | None = None) -> None:
        self.spec = spec if spec is not None else LabSpec()
        self.spec.validate()
        self._step = ""

    # ------------------------------------------------------------------ naming
    def ns(self, role: str) -> str:
        """Namespace name for a role; the prefix keeps parallel labs apart."""
        if role not in ROLES:
            raise LabError(f"unknown lab role {role!r} (roles: {' '.join(ROLES)})")
        if role not in self.spec.roles():
            raise LabError(f"lab {self.spec.prefix}: role {role!r} is not part of this lab "
                           "(with_client2=False)")
        return f"{self.spec.prefix}{role}"

    def namespaces(self) -> list[str]:
        return [self.ns(r) for r in self.spec.roles()]

    # -------------------------------------------------------------- running
    def exec(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run a command inside a role's namespace and wait (output captured as text unless
        the caller passes its own stdout/stderr)."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(netns.exec_argv(self.ns(role), argv), **kw)

    def spawn(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a command inside a role's namespace.

        `ip netns exec` execs the command itself, so the Popen's PID is the command's PID
        (no shell in between: a SIGTERM to that PID reaches the daemon)."""
        return subprocess.Popen(netns.exec_argv(self.ns(role), argv), **kw)

    # ------------------------------------------------------------- lifecycle
    def __enter__(self) -> NetnsLab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, check: bool = True, hosts: bool = False) -> None:
        """Build the lab (removing an older one with the same prefix first); with `hosts`,
        make the server, relay and client namespaces hosts with an sshd each, and a fleet
        across them (teredolab/labhosts.py).

        On any failure everything this prefix owns is removed again and LabError names the
        failing step."""
        self.down()
        try:
            self._build()
            self._step = "check"
            if check:
                self.check()
            if hosts:
                self._step = "hosts"
                from teredolab.labhosts import LabHosts  # it imports this module
                LabHosts(self).up()
        except BaseException as e:
            # Also on Ctrl-C or a timeout: never leave a half-built lab behind.
            step = self._step
            try:
                self.down()
            except LabError:
                pass
            if isinstance(e, (NetnsError, LabError, OSError, subprocess.SubprocessError)):
                raise LabError(f"lab {self.spec.prefix}: up failed at step '{step}': {e}") from e
            raise

    def down(self) -> list[int]:
        """Stop (by PID) whatever still runs in this prefix's namespaces, then delete them.

        Covers every role name, not just this spec's, so an older lab with the same prefix but
        a second client is removed too.  Returns the PIDs that had to be stopped.

        First what `up(hosts=True)` added: each host's sshd (by PID), the management links, the
        files and the controller's connections (teredolab/labhosts.py)."""
        from teredolab.labhosts import LabHosts
        from teredolab.sshhost import HostError

        stopped: list[int] = []
        errors: list[str] = []
        try:
            errors += LabHosts(self).remove()
        except (HostError, OSError) as e:
            errors.append(f"hosts: {e}")
        for role in reversed(ROLES):
            name = f"{self.spec.prefix}{role}"
            try:
                stopped += netns.delete(name)
            except NetnsError as e:
                errors.append(str(e))
        if errors:
            raise LabError(f"lab {self.spec.prefix}: down: {errors[0]}")
        return stopped

    # ----------------------------------------------------------------- build
    def _run(self, step: str, argv: Sequence[str], input: str | None = None) -> None:
        self._step = step
        netns.run(argv, input=input)

    def _ip(self, step: str, role: str, *args: str) -> None:
        self._run(step, ["ip", "-n", self.ns(role), *args])

    def _addr(self, step: str, role: str, cidr: str, dev: str, *extra: str) -> None:
        # Second guard at the point of use: whatever the spec said, no address outside the
        # documentation ranges is ever configured.
        check_lab_address(cidr)
        self._ip(step, role, "addr", "add", cidr, "dev", dev, *extra)

    def _sysctl(self, step: str, role: str, *settings: str) -> None:
        self._step = step
        netns.sysctl(self.ns(role), *settings)

    def _veth(self, role_a: str, if_a: str, role_b: str, if_b: str) -> None:
        # Created directly inside both namespaces: `ip -n A link add ... peer ... netns B`
        # never puts an interface, even briefly, into the root namespace.
        self._ip(f"veth {role_a}:{if_a} <-> {role_b}:{if_b}", role_a, "link", "add", if_a,
                 "type", "veth", "peer", "name", if_b, "netns", self.ns(role_b))

    def _attach(self, ifname: str, bridge: str) -> None:
        self._ip(f"attach inet:{ifname} to {bridge}", "inet",
                 "link", "set", ifname, "master", bridge, "up")

    def _build(self) -> None:
        s = self.spec
        for role in s.roles():
            self._step = f"create namespace {role}"
            netns.add(self.ns(role))
            # Explicit values so the lab does not depend on what a new namespace inherits
            # (net.core.devconf_inherit_init_net differs between machines); accept_dad=0 so
            # static IPv6 never sits "tentative" for a second.
            self._sysctl(f"base sysctls {role}", role,
                         "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                         "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0",
                         "net.ipv6.conf.default.accept_dad=0")

        # The "internet": two bridges, no addresses, no IPv6 chatter of their own.
        self._sysctl("inet: disable IPv6", "inet", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
        self._ip("inet: bridge br4", "inet", "link", "add", "br4", "type", "bridge",
                 "stp_state", "0", "forward_delay", "0")
        self._ip("inet: bridge br6", "inet", "link", "add", "br6", "type", "bridge",
                 "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
        self._ip("inet: br4 up", "inet", "link", "set", "br4", "up")
        self._ip("inet: br6 up", "inet", "link", "set", "br6", "up")

        p4, p6 = str(s.pub4_plen), str(s.v6_plen)
        # Teredo server: two consecutive public addresses (RFC 4380 qualification uses both)
        # and native IPv6, because it forwards clients' connectivity-test pings to the IPv6
        # internet; without it every client<->native path fails.
        self._veth("srv", "inet4", "inet", "srv4")
        self._attach("srv4", "br4")
        self._sysctl("srv: no IPv6 on inet4", "srv", "net.ipv6.conf.inet4.disable_ipv6=1")
        self._addr("srv: address 1", "srv", f"{s.srv_ip1}/{p4}", "inet4")
        self._addr("srv: address 2", "srv", f"{s.srv_ip2}/{p4}", "inet4")
        self._ip("srv: inet4 up", "srv", "link", "set", "inet4", "up")
        # One L2 segment for every public host: an on-link default route makes each ARP for
        # any public address directly (several "ISPs" on one wire, no router needed).
        self._ip("srv: default route", "srv", "route", "add", "default", "dev", "inet4")
        if s.server_v6:
            self._veth("srv", "inet6", "inet", "srv6")
            self._attach("srv6", "br6")
            self._addr("srv: IPv6 address", "srv", f"{s.srv_ip6}/{p6}", "inet6", "nodad")
            self._ip("srv: inet6 up", "srv", "link", "set", "inet6", "up")

        # Teredo relay: an IPv6 router between the Teredo prefix and the IPv6 internet
        # (without forwarding both directions fail).
        self._veth("rly", "inet4", "inet", "rly4")
        self._attach("rly4", "br4")
        self._sysctl("rly: no IPv6 on inet4 + forwarding", "rly",
                     "net.ipv6.conf.inet4.disable_ipv6=1", "net.ipv6.conf.all.forwarding=1")
        self._addr("rly: address", "rly", f"{s.rly_ip4}/{p4}", "inet4")
        self._ip("rly: inet4 up", "rly", "link", "set", "inet4", "up")
        self._ip("rly: default route", "rly", "route", "add", "default", "dev", "inet4")
        self._veth("rly", "inet6", "inet", "rly6")
        self._attach("rly6", "br6")
        self._addr("rly: IPv6 address", "rly", f"{s.rly_ip6}/{p6}", "inet6", "nodad")
        self._ip("rly: inet6 up", "rly", "link", "set", "inet6", "up")

        # Native IPv6-only host, reaching Teredo space through the relay.
        self._veth("v6", "inet6", "inet", "v6")
        self._attach("v6", "br6")
        self._addr("v6: address", "v6", f"{s.v6_host}/{p6}", "inet6", "nodad")
        self._ip("v6: inet6 up", "v6", "link", "set", "inet6", "up")
        self._ip("v6: route to the Teredo prefix", "v6", "-6", "route", "add",
                 str(s.teredo_network), "via", s.rly_ip6, "dev", "inet6")

        shared = s.with_client2 and s.nat2_type == "shared"
        self._nat_pair("nat", "cli", "nat4", s.nat_wan, s.nat_lan, s.cli_ip, s.nat_type,
                       second=(s.nat2_lan, s.cli2_ip) if shared else None)
        if s.with_client2 and not shared:
            self._nat_pair("nat2", "cli2", "nat24", s.nat2_wan, s.nat2_lan, s.cli2_ip,
                           s.nat2_type)

    def _nat_pair(self, nat: str, cli: str, brport: str, wan: str, lan: str, cip: str,
                  nat_type: str, second: tuple[str, str] | None = None) -> None:
        """A NAT router and its client; `second` = (router address, client address) of a
        second LAN (`lan2`) with `cli2` on it, behind the same NAT."""
        s = self.spec
        self._veth(nat, "wan", "inet", brport)
        self._attach(brport, "br4")
        # IPv4-only links carry no IPv6 at all (no NDP/MLD noise in captures); the client
        # keeps IPv6 enabled globally for its Teredo interface.
        self._sysctl(f"{nat}: sysctls", nat, "net.ipv6.conf.wan.disable_ipv6=1",
                     "net.ipv4.ip_forward=1")
        self._addr(f"{nat}: wan address", nat, f"{wan}/{s.pub4_plen}", "wan")
        self._ip(f"{nat}: wan up", nat, "link", "set", "wan", "up")
        self._ip(f"{nat}: default route", nat, "route", "add", "default", "dev", "wan")
        lans = [("lan", cli, lan, cip)]
        if second is not None:
            lans.append(("lan2", "cli2", *second))
        nets = []
        for ifname, client, router_ip, client_ip in lans:
            self._veth(nat, ifname, client, "lan")
            self._sysctl(f"{nat}: no IPv6 on {ifname}", nat,
                         f"net.ipv6.conf.{ifname}.disable_ipv6=1")
            self._sysctl(f"{client}: no IPv6 on lan", client, "net.ipv6.conf.lan.disable_ipv6=1")
            self._addr(f"{nat}: {ifname} address", nat, f"{router_ip}/{s.lan_plen}", ifname)
            self._ip(f"{nat}: {ifname} up", nat, "link", "set", ifname, "up")
            self._addr(f"{client}: lan address", client, f"{client_ip}/{s.lan_plen}", "lan")
            self._ip(f"{client}: lan up", client, "link", "set", "lan", "up")
            self._ip(f"{client}: default route", client, "route", "add", "default", "via",
                     router_ip, "dev", "lan")
            nets.append(str(ipaddress.IPv4Network(f"{router_ip}/{s.lan_plen}", strict=False)))
        self._run(f"{nat}: nftables rules ({nat_type})",
                  netns.exec_argv(self.ns(nat), ["nft", "-f", "-"]),
                  input=nat_ruleset(nat_type, nets[0], wan, cip, extra_lans=nets[1:]))

    # ----------------------------------------------------------------- check
    def check_plan(self) -> list[tuple[str, str, list[str], bool]]:
        """(description, role, ping arguments, expected to succeed) of every probe."""
        s = self.spec
        plan = [
            (f"cli -> NAT -> server primary ({s.srv_ip1})", "cli", [s.srv_ip1], True),
            (f"cli -> NAT -> server secondary ({s.srv_ip2})", "cli", [s.srv_ip2], True),
            (f"cli -> NAT -> relay ({s.rly_ip4})", "cli", [s.rly_ip4], True),
            (f"relay -> NAT public side ({s.nat_wan})", "rly", [s.nat_wan], True),
            (f"v6 host -> relay ({s.rly_ip6})", "v6", ["-6", s.rly_ip6], True),
        ]
        if s.server_v6:
            plan.append((f"server -> v6 host ({s.v6_host})", "srv", ["-6", s.v6_host], True))
        if s.with_client2:
            plan.append((f"cli2 -> NAT2 -> server ({s.srv_ip1})", "cli2", [s.srv_ip1], True))
            plan.append((f"cli2 -> NAT2 -> NAT1 public ({s.nat_wan})", "cli2", [s.nat_wan], True))
        # The private LAN must NOT be reachable from the internet.
        plan.append((f"private client {s.cli_ip} not reachable from the relay", "rly",
                     [s.cli_ip], False))
        return plan

    def check(self, raise_on_failure: bool = True) -> list[CheckResult]:
        """Plain IPv4/IPv6 reachability along every link (no Teredo), all probes at once."""
        procs = []
        for desc, role, args, expect in self.check_plan():
            wait = "1" if expect else "0.5"
            p = self.spawn(role, ["ping", "-n", "-q", "-c", "1", "-W", wait, *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((desc, expect, p))
        results = []
        for desc, expect, p in procs:
            reached = p.wait(timeout=10) == 0
            results.append(CheckResult(desc, reached == expect))
        failed = [r.description for r in results if not r.ok]
        if failed and raise_on_failure:
            raise LabError(f"lab {self.spec.prefix}: {len(failed)} check(s) failed: "
                           + "; ".join(failed))
        return results

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """JSON-ready picture of the lab: spec, and per role its namespace, addresses, PIDs."""
        roles: dict[str, Any] = {}
        for role in self.spec.roles():
            name = self.ns(role)
            entry: dict[str, Any] = {"namespace": name, "exists": netns.exists(name)}
            if entry["exists"]:
                entry["pids"] = netns.pids(name)
                entry["interfaces"] = _interfaces(name)
            roles[role] = entry
        from teredolab.labhosts import LabHosts

        return {
            "prefix": self.spec.prefix,
            "up": all(r["exists"] for r in roles.values()),
            "spec": dataclasses.asdict(self.spec),
            "roles": roles,
            "hosts": LabHosts(self).info(),  # None without `up --hosts`
        }


def _interfaces(ns: str) -> dict[str, dict[str, Any]]:
    cp = netns.run(["ip", "-j", "-n", ns, "addr", "show"], check=False)
    out: dict[str, dict[str, Any]] = {}
    if cp.returncode != 0 or not cp.stdout.strip():
        return out
    for link in json.loads(cp.stdout):
        if link.get("ifname") == "lo":
            continue
        out[link["ifname"]] = {
            "state": link.get("operstate"),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                          if a.get("scope") != "link"],
        }
    return out


def check_lab_address(cidr: str) -> None:
    """Raise LabError unless `cidr` (address or address/plen) lies in the lab's ranges."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError:
        raise LabError(f"{cidr!r}: not an IP address")
    if iface.version == 4:
        ok = any(iface.network.subnet_of(net) for net in ALLOWED_V4
                 if iface.network.prefixlen >= net.prefixlen)
    else:
        ok = iface.network.prefixlen >= 32 and iface.network.subnet_of(ALLOWED_V6)
    if not ok:
        raise LabError(f"{cidr}: outside the lab's documentation ranges, refused")


def nat_ruleset(nat_type: str, lan_net: str, wan_ip: str, client_ip: str,
                extra_lans: Sequence[str] = ()) -> str:
    """The nftables rule set of one NAT router (an `nft -f` script).

    restricted       masquerade: endpoint-independent mapping (source port kept when free),
                     address+port-dependent filtering, unsolicited inbound dropped in INPUT
    restricted-nofw  the same without that INPUT drop
    symmetric        masquerade fully-random: a new random port per destination
    symmetric-sequential  UDP: every new mapping takes the NAT's next port (20000, 20001...,
                     20255, then 20000 again; nftables `numgen inc`), whatever the client
                     and destination
    symmetric-preserving  UDP: the first mapping of a client source port keeps that port,
                     every later one (another destination) gets a random port
    fullcone         masquerade persistent + DNAT of every inbound UDP port to the client
    symmetric-upnp   symmetric, plus the chains miniupnpd's nftables back end adds its port
                     mappings to (table inet filter: miniupnpd, prerouting_miniupnpd,
                     postrouting_miniupnpd), and inbound DNATed traffic forwarded; the IGD
                     itself is started by teredolab.igd

    `extra_lans`: more LANs behind the same NAT (the lab's `shared` NAT 2).  The router
    forwards between its LANs, and does not hairpin: a packet from a LAN to the WAN
    address is delivered to the router itself, which has nothing listening.
    """
    if nat_type not in NAT_TYPES or nat_type == "shared":
        raise LabError(f"unknown NAT type {nat_type!r} (one of {', '.join(NAT_TYPES)})")
    masq = {"restricted": "masquerade", "restricted-nofw": "masquerade",
            "symmetric": "masquerade fully-random", "fullcone": "masquerade persistent",
            "symmetric-sequential": "masquerade fully-random",
            "symmetric-preserving": "masquerade fully-random",
            "symmetric-upnp": "masquerade fully-random"}[nat_type]
    lans = [lan_net, *extra_lans]
    src = lans[0] if len(lans) == 1 else "{ " + ", ".join(lans) + " }"
    lan_ifs = '"lan"' if len(lans) == 1 else "{ " + ", ".join(
        '"lan"' if i == 0 else f'"lan{i + 1}"' for i in range(len(lans))) + " }"
    lines = ["flush ruleset", "table ip lab_nat {"]
    if nat_type == "symmetric-preserving":
        lines.append("  set seen { type inet_service; flags dynamic,timeout; timeout 5m; }")
    lines.append("  chain postrouting { type nat hook postrouting priority srcnat; "
                 "policy accept;")
    if nat_type == "symmetric-sequential":
        # NAT rules see only a connection's first packet: one increment per new mapping.
        # Through a map, because nftables hands a bare `numgen` value to snat in host byte
        # order (20000, 20001... would leave as 8270, 8526...).
        ports = ", ".join(f"{i} : {SEQUENTIAL_FIRST_PORT + i}" for i in range(SEQUENTIAL_PORTS))
        lines.append(f'    oifname "wan" ip saddr {src} meta l4proto udp snat to {wan_ip} : '
                     f"numgen inc mod {SEQUENTIAL_PORTS} map {{ {ports} }}")
    elif nat_type == "symmetric-preserving":
        lines += [f'    oifname "wan" ip saddr {src} udp sport @seen '
                  f"snat to {wan_ip}:1024-65535 fully-random",
                  f'    oifname "wan" ip saddr {src} meta l4proto udp '
                  f"add @seen {{ udp sport }} snat to {wan_ip}"]
    lines += [
        f'    oifname "wan" ip saddr {src} {masq}',
        "  }",
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
    ]
    if nat_type == "fullcone":
        lines.append(f'    iifname "wan" ip daddr {wan_ip} udp dport 1024-65535 '
                     f'dnat to {client_ip}')
    lines += [
        "  }",
        "  chain forward { type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        f'    iifname {lan_ifs} oifname "wan" accept',
    ]
    if extra_lans:
        lines.append(f"    iifname {lan_ifs} oifname {lan_ifs} accept")
    if nat_type in ("fullcone", "symmetric-upnp"):
        lines.append('    iifname "wan" ct status dnat accept')
    lines.append("  }")
    if nat_type != "restricted-nofw":
        # A peer's first direct bubble arrives unsolicited.  If it passes INPUT, conntrack
        # confirms an entry whose reply tuple then clashes with the mapping the client opens
        # a moment later, masquerade picks another source port, and hole punching fails.
        # A dropped packet's entry is never confirmed; home routers all drop here.
        lines += [
            "  chain input { type filter hook input priority filter; policy accept;",
            '    iifname "wan" ct state established,related accept',
            '    iifname "wan" icmp type echo-request accept',
            '    iifname "wan" drop',
            "  }",
        ]
    lines.append("}")
    if nat_type == "symmetric-upnp":
        # miniupnpd (2.3, nftables) adds its rules to these chains and creates none itself
        lines += [
            "table inet filter {",
            "  chain miniupnpd { }",
            "  chain prerouting_miniupnpd { }",
            "  chain postrouting_miniupnpd { }",
            "  chain forward { type filter hook forward priority filter; policy accept; "
            "jump miniupnpd; }",
            "  chain prerouting { type nat hook prerouting priority dstnat; policy accept; "
            "jump prerouting_miniupnpd; }",
            "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; "
            "jump postrouting_miniupnpd; }",
            "}",
        ]
    return "\n".join(lines) + "\n"
