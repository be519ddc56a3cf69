"""RFC 6081 §3.2 (UPnP-enabled symmetric NAT) on the simulated network (docs/protocol.md §13.8).

Client A sits behind a random-port symmetric NAT whose IGD maps A's Teredo port
(`Nat.forward`, what miniupnpd does in the kernel lab); the runtime hands A that mapping as a
host fact (`set_upnp_mapping`).  A advertises it in the Alternate Address trailer of its
bubbles, B bubbles it, and the flow B starts there is one A's NAT admits.  Against a
port-restricted B this is the only way: without the mapping, or with the directive off, the
same pair fails (as `test_random_symmetric_against_port_restricted_is_impossible`).
"""

from __future__ import annotations

import pytest

from engine.proto import records as dataclasses
from engine.proto.rfc6081 import SERVER_LOAD_REDUCTION, UPNP, ExtensionSet
from tests.sim.rfc6081lab import PairLab

ON = {"extensions": ExtensionSet()}
LEASE = 3600


def _lab(peer: str, *, fact: bool = True, ext_a: ExtensionSet | None = None,
         forward: bool = True) -> PairLab:
    kw_a = {"extensions": ext_a} if ext_a is not None else ON
    lab = PairLab("symmetric_random", peer, client_kw=kw_a, client_kw_b=ON)
    inside = lab.atts[0].address(0)
    if forward:
        lab.nats[0].forward(inside[1], inside)
    if fact:
        lab.a.set_upnp_mapping((lab.nats[0].external_ip, inside[1], LEASE), "")
    return lab


def _used(lab: PairLab, i: int) -> list[str]:
    rows = lab.clients[i].list_peers(lab.net.now, 10)["peers"]
    assert len(rows) == 1, rows
    return [e for e in rows[0]["extensions"] if e != SERVER_LOAD_REDUCTION]


@pytest.mark.parametrize("peer", ["port_restricted", "restricted"])
@pytest.mark.parametrize("initiator", [0, 1])
def test_the_igd_mapping_makes_the_symmetric_nat_reachable(peer, initiator):
    lab = _lab(peer)
    assert lab.ping_pong(8, initiator=initiator) == (8, 8)
    assert _used(lab, 0) == [UPNP] and _used(lab, 1) == [UPNP]
    # B reaches A at the IGD's port, not at the port in A's Teredo address
    pa = lab.b.peers.get(lab.a.address)
    assert pa.mapping == (lab.nats[0].external_ip, lab.atts[0].address(0)[1])
    assert pa.mapping[1] != lab.a.status()["mapped"]["port"]
    assert lab.net.stats["nat_forward_clash"] == 0  # A never started a flow of its own to B


@pytest.mark.parametrize("initiator", [0, 1])
def test_without_the_mapping_the_pair_fails(initiator):
    """The same pair with the IGD mapping in place but no host fact (the runtime found no
    IGD), and with the fact but no mapping on the NAT (a stale fact): nothing gets through."""
    assert _lab("port_restricted", fact=False).ping_pong(6, initiator=initiator)[0] == 0
    assert _lab("port_restricted", forward=False).ping_pong(6, initiator=initiator)[0] == 0


def test_the_directive_switches_it_off():
    off = dataclasses.replace(ExtensionSet(), upnp_symmetric_nat=False)
    lab = _lab("port_restricted", ext_a=off)
    assert lab.ping_pong(6) == (0, 0)
    assert lab.a.status()["rfc6081"]["upnp"] is None


def test_status_reports_the_mapping_and_why_not():
    lab = _lab("port_restricted")
    port = lab.atts[0].address(0)[1]
    assert lab.a.status()["rfc6081"]["upnp"] == {
        "mapping": {"ip": "198.51.100.1", "port": port, "lease": LEASE},
        "advertised": True, "why": ""}
    lab.a.set_upnp_mapping(None, "SSDP search from 10.1.0.2: no IGD answered")
    assert lab.a.status()["rfc6081"]["upnp"] == {
        "mapping": None, "why": "SSDP search from 10.1.0.2: no IGD answered"}
    # another NAT in front of the IGD: its external address is not the server's view
    lab.a.set_upnp_mapping(("192.0.2.99", port, LEASE), "")
    st = lab.a.status()["rfc6081"]["upnp"]
    assert not st["advertised"] and "not the one the server sees" in st["why"]


def test_a_cone_nat_gets_no_help_it_does_not_need():
    """Behind a port-restricted (cone-mapping) NAT the mapping is not advertised and the
    client's RFC 4380 direct bubbles go out as before."""
    lab = PairLab("port_restricted", "port_restricted", client_kw=ON)
    inside = lab.atts[0].address(0)
    lab.a.set_upnp_mapping((lab.nats[0].external_ip, inside[1] + 1, LEASE), "")
    assert lab.a.status()["rfc6081"]["upnp"]["advertised"] is False
    assert lab.ping_pong(6) == (6, 6)
    assert UPNP not in _used(lab, 0)


def test_the_directive_in_a_config_file():
    from engine.config import ConfigError, parse_config

    on = parse_config("ServerAddress 203.0.113.10\n", "t.conf", resolver=lambda h: h)
    off = parse_config("ServerAddress 203.0.113.10\nUpnpSymmetricNat off\n", "t.conf",
                       resolver=lambda h: h)
    assert ExtensionSet.from_config(on).upnp_symmetric_nat is True  # default on
    assert ExtensionSet.from_config(off).upnp_symmetric_nat is False
    with pytest.raises(ConfigError, match=r"t\.conf:2: UpnpSymmetricNat"):
        parse_config("ServerAddress 203.0.113.10\nUpnpSymmetricNat maybe\n", "t.conf",
                     resolver=lambda h: h)


@pytest.mark.parametrize("peer", ["restricted", "port_restricted", "full_cone"])
@pytest.mark.parametrize("initiator", [0, 1])
def test_a_peer_without_extensions_fares_as_without_upnp(peer, initiator):
    """Towards a plain RFC 4380 peer (it never bubbles our mapping) the mapping changes
    nothing: from the second bubble round on A sends RFC 4380's direct bubbles again, so
    what worked without UPnP (§3.1 against a restricted or full-cone NAT) still works."""
    off = {"extensions": ExtensionSet.none()}
    results = []
    for fact in (False, True):
        lab = PairLab("symmetric_random", peer, client_kw=ON, client_kw_b=off)
        inside = lab.atts[0].address(0)
        lab.nats[0].forward(inside[1], inside)
        if fact:
            lab.a.set_upnp_mapping((lab.nats[0].external_ip, inside[1], LEASE), "")
            assert lab.a.status()["rfc6081"]["upnp"]["advertised"]
        results.append(lab.ping_pong(8, initiator=initiator))
    assert results[0] == results[1]
    if peer != "port_restricted" and initiator == 1:
        assert results[1] == (8, 8)  # a reference that can fail: these pairs do work
