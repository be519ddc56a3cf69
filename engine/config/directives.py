"""The directives of miredo.conf and miredo-server.conf: spelling, roles, expected value.

One table serves both file formats, because the engine is one program for the three roles;
which directives a file may hold follows from its role (`role_of`).
"""

from __future__ import annotations

from engine.proto.records import dataclass

CLIENT, RELAY, SERVER = "client", "relay", "server"

ROLE_OF_RELAY_TYPE = {
    "client": CLIENT,
    "autoclient": CLIENT,  # an alias kept by miredo for old files
    "relay": RELAY,
    "cone": RELAY,  # miredo: the same as relay
    "restricted": RELAY,  # deprecated (relay behind a restricted NAT)
    "server": SERVER,  # ours: lets one file format say "server" explicitly
}
RELAY_TYPE_WORDS = tuple(ROLE_OF_RELAY_TYPE)
"""Every word `RelayType` accepts, in the order messages list them (for the relay role's
own meaning of the relay words, see `engine.proto.relay.CONE_OF_RELAY_TYPE`)."""
LOCAL_DISCOVERY = ("enabled", "forced", "disabled")


@dataclass(frozen=True)
class Directive:
    name: str
    roles: frozenset[str]
    expects: str
    """What a good value looks like, for "missing value" messages."""


def _d(name: str, roles: tuple[str, ...], expects: str) -> Directive:
    return Directive(name, frozenset(roles), expects)


ALL = (CLIENT, RELAY, SERVER)
RATE_EXPECTS = "RATE or RATE/BURST in packets per second (e.g. 20/50), or off"
DIRECTIVES: dict[str, Directive] = {
    d.name.lower(): d
    for d in (
        _d("RelayType", ALL, "one of " + ", ".join(RELAY_TYPE_WORDS)),
        _d("ServerAddress", (CLIENT,), "the Teredo server's IPv4 address or host name"),
        _d("ServerAddress2", (CLIENT,), "the server's secondary IPv4 address or host name"),
        _d("LocalDiscovery", (CLIENT,), "enabled, forced or disabled"),
        _d("DiscoveryInterfaces", (CLIENT,), "a regular expression matching interface names"),
        _d("DiscoveryNetmask", (CLIENT,), "a dotted IPv4 netmask"),
        _d("Prefix", (RELAY, SERVER), "an IPv6 address whose first 32 bits are the prefix"),
        _d("InterfaceMTU", (RELAY, SERVER), "an MTU from 1280 to 65535"),
        _d("InterfaceName", (CLIENT, RELAY), "an interface name of at most 15 bytes"),
        _d("BindAddress", (CLIENT, RELAY), "a local IPv4 address or host name"),
        _d("BindPort", (CLIENT, RELAY), "a UDP port number, 0-65535"),
        _d("SyslogFacility", ALL, "a syslog facility such as daemon or local0"),
        _d("ServerBindAddress", (SERVER,), "the server's primary global IPv4 address"),
        _d("ServerBindAddress2", (SERVER,), "the server's secondary global IPv4 address"),
        _d("StatusSocket", ALL, "the absolute path of the status socket"),
        _d("WorkerWatchdog", ALL,
           "seconds without a heartbeat before the worker is restarted (2-3600), or off"),
        # teredo-engine's server rate limits (miredo-server has none, §12.2 #20)
        _d("ServerRateLimit", (SERVER,), "on, or off for no rate limits (as miredo-server)"),
        _d("ServerRSRate", (SERVER,), RATE_EXPECTS),
        _d("ServerRSRateTotal", (SERVER,), RATE_EXPECTS),
        _d("ServerForwardRate", (SERVER,), RATE_EXPECTS),
        _d("ServerForwardRateTotal", (SERVER,), RATE_EXPECTS),
        _d("ServerForwardDestinationRate", (SERVER,), RATE_EXPECTS),
        _d("ServerBareRSLimit", (SERVER,), RATE_EXPECTS),
        _d("ServerNativeRate", (SERVER,), RATE_EXPECTS),
        _d("ServerNativeRateTotal", (SERVER,), RATE_EXPECTS),
        _d("ServerRateSources", (SERVER,), "how many source addresses to track, 1-16777216"),
        # teredo-engine's peer table budget (miredo bounds it by count only)
        _d("PeerMemoryLimit", (CLIENT, RELAY),
           "a size in bytes with an optional K, M or G suffix, e.g. 64M"),
        # teredo-engine's RFC 6081 extensions (docs/protocol.md §13), client only
        *(_d(name, (CLIENT,), "on, or off for plain RFC 4380 behaviour")
          for name in ("SymmetricNatSupport", "PortPreservingNat", "SequentialPortNat",
                       "Hairpinning", "ServerLoadReduction", "UpnpSymmetricNat")),
    )
}

#: RFC 6081 directive -> the `EngineConfig` field (and `engine.proto.rfc6081` name) it sets.
EXTENSION_DIRECTIVES = {
    "SymmetricNatSupport": "symmetric_nat_support",
    "PortPreservingNat": "port_preserving_nat",
    "SequentialPortNat": "sequential_port_nat",
    "Hairpinning": "hairpinning",
    "ServerLoadReduction": "server_load_reduction",
    "UpnpSymmetricNat": "upnp_symmetric_nat",
}

#: Rate directive -> the `engine.proto.server.ServerLimits` field it sets.
SERVER_RATE_DIRECTIVES = {
    "ServerRSRate": "rs_per_source",
    "ServerRSRateTotal": "rs_total",
    "ServerForwardRate": "forward_per_source",
    "ServerForwardRateTotal": "forward_total",
    "ServerForwardDestinationRate": "forward_per_destination",
    "ServerBareRSLimit": "bare_rs_per_prefix",
    "ServerNativeRate": "raw6_per_source",
    "ServerNativeRateTotal": "raw6_total",
}
MAX_RATE_SOURCES = 1 << 24


def lookup(name: str) -> Directive | None:
    return DIRECTIVES.get(name.lower())


def suggestion(name: str) -> str | None:
    """The closest known spelling of a mistyped directive name, if one is close enough
    (`difflib` is imported here: only a config with a mistake needs it)."""
    import difflib

    matches = difflib.get_close_matches(name.lower(), list(DIRECTIVES), n=1, cutoff=0.6)
    return DIRECTIVES[matches[0]].name if matches else None


def roles_text(roles: frozenset[str]) -> str:
    """"client only", "relay and server only" - word order fixed, for stable messages."""
    names = [r for r in ALL if r in roles]
    if len(names) == 1:
        return f"{names[0]} only"
    return ", ".join(names[:-1]) + f" and {names[-1]} only"
