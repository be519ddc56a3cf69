"""The server's rate limits from the config file, the global forwarding cap, the trailer cap,
and limits changed in place on SIGHUP (reconfigure)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import ConfigError, parse_config
from engine.proto.ratelimit import Rate
from engine.proto.records import replace
from engine.proto.server import MAX_RELAYED_TRAILER, ServerLimits, ServerRole
from tests.sim.test_server import CLIENT_MAP, E1, E4, E5, RELAY, feed

ROOT = Path(__file__).resolve().parents[2]
HEAD = "ServerBindAddress 192.0.2.1\nServerBindAddress2 192.0.2.2\n"


def conf(text: str):
    return parse_config(HEAD + text, "s.conf", resolver=lambda h: h)


def role(text: str) -> ServerRole:
    return ServerRole.from_config(conf(text), now=0.0)


def test_defaults_without_directives():
    assert role("").limits == ServerLimits()


def test_every_rate_directive_sets_its_limit():
    r = role("ServerRSRate 2/3\nServerRSRateTotal 100\nServerForwardRate 7.5/10\n"
             "ServerForwardRateTotal off\nServerNativeRate 1/1\nserverNATIVErateTOTAL 9/12\n"
             "ServerRateSources 1000\n")
    assert r.limits == ServerLimits(
        rs_per_source=Rate(2, 3), rs_total=Rate(100, 100), forward_per_source=Rate(7.5, 10),
        forward_total=Rate(None), raw6_per_source=Rate(1, 1), raw6_total=Rate(9, 12),
        max_sources=1000)


def test_a_configured_rs_rate_is_enforced():
    r = role("ServerRSRate 1/2\n")
    assert sum(len(feed(r, E1, now=5.0)[0]) for _ in range(10)) == 2
    assert sum(len(feed(r, E1, now=6.0)[0]) for _ in range(10)) == 1


def test_rate_limit_off_is_miredo():
    c = conf("ServerRateLimit off\nServerRSRate 1/1\n")
    assert c.server_rate_limit is False
    assert c.warnings == ("s.conf:4: warning: ServerRSRate: ignored, ServerRateLimit is off",)
    r = ServerRole.from_config(c)
    assert r.limits == ServerLimits.unlimited()
    assert sum(len(feed(r, E1, now=1.0)[0]) for _ in range(500)) == 500


@pytest.mark.parametrize(("line", "message"), [
    ("ServerRSRate fast", "ServerRSRate: expected RATE or RATE/BURST in packets per second"),
    ("ServerRSRate 0", "ServerRSRate: rate 0 is out of range"),
    ("ServerRSRate 5/0", "ServerRSRate: burst 0 is out of range"),
    ("ServerRSRate -5", "ServerRSRate: expected RATE or RATE/BURST"),
    ("ServerRSRate 1e9", "ServerRSRate: expected RATE or RATE/BURST"),
    ("ServerForwardRateTotal 99999999", "ServerForwardRateTotal: rate 99999999 is out of range"),
    ("ServerRateLimit maybe", "ServerRateLimit: expected one of on, off"),
    ("ServerRateSources 0", "ServerRateSources: 0 is out of range (expected 1-16777216)"),
    ("ServerRateSources 0x10", "ServerRateSources: expected a whole number"),
])
def test_bad_values_name_file_line_and_directive(line, message):
    with pytest.raises(ConfigError) as e:
        conf(line + "\n")
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"s.conf:3: {message}")


def test_rate_directives_are_superfluous_outside_server_mode():
    c = parse_config("RelayType cone\nServerRSRate 5\n", "r.conf")
    assert c.server_rates == () and len(c.warnings) == 1
    assert "superfluous directive ServerRSRate" in c.warnings[0]


def test_forward_total_caps_spoofed_sources_spread_over_many_addresses():
    r = ServerRole("192.0.2.1", "192.0.2.2", now=0.0,
                   limits=ServerLimits(forward_total=Rate(1, 5)))
    sent = sum(len(feed(r, E4, src=(f"203.0.113.{i}", 3545), now=2.0)[0]) for i in range(1, 21))
    assert sent == 5 and r.forward_total.denied == 15
    assert r.status()["ratelimit"]["forward_total_denied"] == 15


def test_trailers_beyond_the_cap_are_not_relayed():
    """A bubble plus kilobytes of 'trailer' would make us an open UDP relay."""
    r = ServerRole("192.0.2.1", "192.0.2.2", now=0.0)
    ok = bytes(MAX_RELAYED_TRAILER)
    assert feed(r, E4 + ok, src=RELAY)[0] == [(0, E5 + ok, CLIENT_MAP)]
    assert feed(r, E4 + ok + b"x", src=RELAY) == ([], [])
    assert dict(r.counters.drops) == {"a6_trailer_too_long": 1}


def test_reload_changes_limits_in_place_and_refuses_other_changes():
    old = conf("ServerRSRate 1/1\n")
    r = ServerRole.from_config(old, now=0.0)
    assert len(feed(r, E1, now=1.0)[0]) == 1 and feed(r, E1, now=1.0)[0] == []
    assert r.reconfigure(conf("ServerRSRate 100/100\n"), 1.0) is True
    assert r.limits.rs_per_source == Rate(100, 100)
    assert sum(len(feed(r, E1, now=1.0)[0]) for _ in range(50)) == 50
    assert r.reconfigure(conf("ServerRSRate 100/100\nInterfaceMTU 1400\n"), 2.0) is False
    assert r.reconfigure(replace(old, server_bind_address="192.0.2.5"), 2.0) is False


def _example_rate_lines() -> list[str]:
    text = (ROOT / "examples" / "server.conf").read_text()
    return [m.group(1) for m in re.finditer(r"^#(Server\w*Rate\w*\s+\S+)", text, re.M)]


def test_example_documents_every_rate_directive_with_its_default():
    """examples/server.conf shows each directive commented out with the built-in value:
    uncommenting them all must change nothing."""
    lines = _example_rate_lines()
    names = {line.split()[0] for line in lines}
    assert names == {"ServerRateLimit", "ServerRSRate", "ServerRSRateTotal", "ServerForwardRate",
                     "ServerForwardRateTotal", "ServerForwardDestinationRate",
                     "ServerNativeRate", "ServerNativeRateTotal", "ServerRateSources"}
    c = conf("\n".join(lines) + "\n")
    assert c.warnings == ()
    assert ServerLimits.from_config(c) == ServerLimits()
