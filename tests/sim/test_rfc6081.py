"""RFC 6081 extensions end to end on the simulated network (docs/protocol.md §13).

The same two-client lab as the baseline (`test_rfc6081_baseline.py`): with the extensions
on, client-to-client works behind the NAT kinds the RFC targets; where the RFC cannot help
the test is an expected failure that says why; with the extensions off, or towards a peer
that has none, every datagram is the one RFC 4380 behaviour sends today.
"""

from __future__ import annotations

import pytest

from engine.proto import records as dataclasses
from engine.proto.rfc6081 import (
    HAIRPINNING,
    NAT_CONE,
    NAT_PRESERVING,
    NAT_SEQUENTIAL,
    NAT_SYMMETRIC,
    PORT_PREDICTION,
    PORT_PRESERVING,
    SEQUENTIAL,
    SERVER_LOAD_REDUCTION,
    SYMMETRIC,
    ExtensionSet,
)
from engine.proto.wire import parse_datagram
from tests.sim.rfc6081lab import PairLab

ON = {"extensions": ExtensionSet()}
OFF = {"extensions": ExtensionSet.none()}


def _used(lab: PairLab, i: int) -> list[str]:
    c = lab.clients[i]
    rows = c.list_peers(lab.net.now, 10)["peers"]
    assert len(rows) == 1, rows
    return [e for e in rows[0]["extensions"] if e != SERVER_LOAD_REDUCTION]


@pytest.mark.parametrize("kind,peer,a_uses,b_uses", [
    ("symmetric_sequential", "port_restricted", SEQUENTIAL, PORT_PREDICTION),
    ("symmetric_sequential", "restricted", SEQUENTIAL, PORT_PREDICTION),
    ("symmetric_preserving", "port_restricted", PORT_PRESERVING, PORT_PREDICTION),
    ("symmetric_preserving", "restricted", PORT_PRESERVING, PORT_PREDICTION),
    ("symmetric_random", "restricted", SYMMETRIC, SYMMETRIC),
])
def test_client_to_client_behind_a_symmetric_nat(kind, peer, a_uses, b_uses):
    lab = PairLab(kind, peer, client_kw=ON)
    assert lab.ping_pong(8) == (8, 8)
    assert _used(lab, 0) == [a_uses] and _used(lab, 1) == [b_uses]
    used = lab.b.status()["rfc6081"]["used"]
    assert used.pop(b_uses) == 1 and set(used) <= {SERVER_LOAD_REDUCTION}


@pytest.mark.parametrize("kind,peer", [
    ("symmetric_sequential", "port_restricted"), ("symmetric_sequential", "restricted"),
    ("symmetric_preserving", "port_restricted"), ("symmetric_random", "restricted"),
])
def test_the_peer_outside_the_symmetric_nat_asks_first(kind, peer):
    """B (behind the cone-type NAT) sends first: A answers its indirect bubble by bubbling
    B as if A had asked, so B learns A's port (or that A is behind a symmetric NAT)."""
    lab = PairLab(kind, peer, client_kw=ON)
    assert lab.ping_pong(8, initiator=1) == (8, 8)
    assert _used(lab, 1)


@pytest.mark.parametrize("kind", ["port_restricted", "restricted", "symmetric_sequential",
                                  "symmetric_preserving", "symmetric_random"])
def test_two_clients_behind_one_nat_that_does_not_hairpin(kind):
    """Hairpinning (§3.5): the clients meet on their private addresses, and keep each other
    as local peers.  Local discovery is off and the two sit on different subnets, so it
    is the Alternate Address trailer that does it."""
    lab = PairLab(kind, shared=True, client_kw=ON)
    assert not lab.a.discovery.enabled
    assert lab.ping_pong(8) == (8, 8)
    assert PairLab(kind, shared=True, client_kw=ON).ping_pong(8, initiator=1) == (8, 8)
    assert _used(lab, 0) == [HAIRPINNING] and _used(lab, 1) == [HAIRPINNING]
    pb = lab.a.peers.get(lab.b.address)
    assert pb.local and pb.mapping == lab.atts[1].address(0)
    assert lab.net.stats["udp_no_hairpin"] > 0  # what RFC 4380 tried first still fails


@pytest.mark.xfail(strict=True, reason="RFC 6081 cannot help: a random-port symmetric NAT "
                   "gives the peer no port to aim at, and a port-restricted peer admits only "
                   "the port it sent to")
def test_random_symmetric_against_port_restricted_is_impossible():
    assert PairLab("symmetric_random", "port_restricted", client_kw=ON).ping_pong(8) == (8, 8)


@pytest.mark.xfail(strict=True, reason="symmetric NAT on both ends: each side's bubbles leave "
                   "from a port the other side's NAT has never been sent to, and RFC 6081 "
                   "predicts the port of one side only (random ports: nothing to predict)")
@pytest.mark.parametrize("kind", ["symmetric_random", "symmetric_sequential",
                                  "symmetric_preserving"])
def test_symmetric_on_both_ends(kind):
    assert PairLab(kind, kind, client_kw=ON).ping_pong(8) == (8, 8)


@pytest.mark.parametrize("kind,expect", [
    ("symmetric_sequential", NAT_SEQUENTIAL), ("symmetric_preserving", NAT_PRESERVING),
    ("symmetric_random", NAT_SYMMETRIC), ("port_restricted", NAT_CONE),
])
def test_nat_probe_classifies_the_nat(kind, expect):
    lab = PairLab(kind, "port_restricted", client_kw=ON)
    st = lab.a.status()["rfc6081"]
    assert st["nat"] == expect and st["secondary_mapped"]["ip"] == "198.51.100.1"


# -- off, and towards a peer without them: RFC 4380 exactly --------------------------------

KINDS = [("symmetric_sequential", "port_restricted"), ("symmetric_preserving", "restricted"),
         ("symmetric_random", "restricted"), ("port_restricted", "port_restricted"),
         ("port_restricted", "shared")]


def _run(kind: str, peer: str, kw_a: dict, kw_b: dict) -> PairLab:
    shared = peer == "shared"
    lab = PairLab(kind, "port_restricted" if shared else peer, shared=shared,
                  client_kw=kw_a, client_kw_b=kw_b)
    lab.result = lab.ping_pong(6)
    return lab


def _trace(lab: PairLab, sender: int | None = None) -> list[tuple]:
    name = None if sender is None else lab.atts[sender].name
    return [(e.time, e.src, e.dst, e.payload, e.fate) for e in lab.net.trace
            if name is None or e.sender == name]


@pytest.mark.parametrize("kind,peer", KINDS)
def test_switched_off_is_byte_for_byte_rfc_4380(kind, peer):
    """All five directives off: every datagram of the run is the one a client built
    without extensions (today's code path) sends."""
    today = _run(kind, peer, {}, {})
    off = _run(kind, peer, OFF, OFF)
    assert _trace(off) == _trace(today)
    for c in off.clients:
        assert c.status()["rfc6081"]["nat"] == "unknown"
    assert all(parse_datagram(e.payload).trailer_len == 0 for e in off.net.trace
               if e.payload[:1] != b"\x00")


def _dests(lab: PairLab, i: int) -> set:
    return {e.dst for e in lab.net.trace if e.sender == lab.atts[i].name}


@pytest.mark.parametrize("initiator", [0, 1])
@pytest.mark.parametrize("kind,peer", KINDS)
def test_a_peer_without_extensions_sees_rfc_4380(kind, peer, initiator):
    """A has them on, B (miredo, or ours switched off) has none.  B gets RFC 4380
    bubbles (from A's Teredo address, as RFC 4380 §5.2.6 has them; trailers it ignores)
    and nothing else: A sends to no endpoint it would not send to without extensions but
    the server's secondary address (the NAT probe), and B never sends a trailer.  The
    outcome is at least today's."""
    def run(kw_a: dict, kw_b: dict) -> PairLab:
        shared = peer == "shared"
        lab = PairLab(kind, "port_restricted" if shared else peer, shared=shared,
                      client_kw=kw_a, client_kw_b=kw_b)
        lab.result = lab.ping_pong(6, initiator)
        return lab

    today = run(OFF, OFF)
    for mixed, ours, plain in ((run(ON, OFF), 0, 1), (run(OFF, ON), 1, 0)):
        assert all(m >= t for m, t in zip(mixed.result, today.result, strict=True))
        assert _dests(mixed, ours) - {("203.0.113.11", 3544)} <= _dests(today, ours)
        assert all(parse_datagram(e.payload).trailer_len == 0 for e in mixed.net.trace
                   if e.sender == mixed.atts[plain].name and e.payload[:1] != b"\x00")


@pytest.mark.parametrize("off,kind,peer", [
    ("sequential_port_nat", "symmetric_sequential", "port_restricted"),
    ("port_preserving_nat", "symmetric_preserving", "port_restricted"),
    ("symmetric_nat_support", "symmetric_random", "restricted"),
    ("hairpinning", "port_restricted", "shared"),
])
def test_each_directive_switches_its_extension_off(off, kind, peer):
    ext = dataclasses.replace(ExtensionSet(), **{off: False})
    lab = _run(kind, peer, {"extensions": ext}, {"extensions": ext})
    assert lab.result == (0, 0)


def test_port_preserving_without_extra_sockets_stays_idle():
    """A runtime that does not open the extra sockets of `socket_requests`: no Random Port
    trailer is offered (the prediction would be wrong), the rest works as before."""
    lab = PairLab("symmetric_preserving", "port_restricted", client_kw=ON)
    lab.a.ext.extra_sockets = False
    assert lab.ping_pong(4) == (0, 0)
    assert lab.a.status()["rfc6081"]["extra_sockets"] == 0


@pytest.mark.parametrize("slr", [True, False])
def test_server_load_reduction_refreshes_a_quiet_peer_without_the_server(slr):
    """§3.6: after 40 s of silence (peers stale, NAT mappings still open) the next packet
    is preceded by one direct bubble with an ND solicitation, answered directly with an
    advertisement: no indirect bubble goes through the server.  Switched off: RFC 4380's
    direct + indirect pair."""
    ext = dataclasses.replace(ExtensionSet(), server_load_reduction=slr)
    lab = PairLab("port_restricted", "port_restricted", client_kw={"extensions": ext})
    assert lab.ping_pong(3) == (3, 3)
    lab.net.run_for(40)
    start = lab.net.now
    assert lab.ping_pong(3) == (6, 6)
    via_server = [e for e in lab.net.trace if e.time >= start and e.dst == ("203.0.113.10", 3544)
                  and e.payload[6] == 59 and e.sender == lab.atts[0].name]
    assert (via_server == []) is slr
    rows = lab.a.list_peers(lab.net.now, 10)["peers"]
    assert (SERVER_LOAD_REDUCTION in rows[0]["extensions"]) is slr
