"""The cases RFC 6081 exists for, with plain RFC 4380 (what miredo does, and what our client
does with the extensions off): client-to-client fails behind every symmetric NAT flavour when
the peer's NAT filters by port, and between two clients behind one NAT that does not
hairpin.  The kernel interop matrix shows the same for a symmetric NAT; these tests pin it
down per NAT flavour so that the extension tests are a measured improvement."""

from __future__ import annotations

import pytest

from engine.proto.rfc6081 import ExtensionSet
from tests.sim.rfc6081lab import PairLab
from tests.sim.simnet import SYMMETRIC_KINDS

PLAIN = {"extensions": ExtensionSet.none()}


@pytest.mark.parametrize("kind", sorted(SYMMETRIC_KINDS))
def test_symmetric_flavour_against_port_restricted_fails(kind):
    lab = PairLab(kind, "port_restricted", client_kw=PLAIN)
    assert lab.ping_pong(8) == (0, 0)
    assert lab.net.stats["udp_nat_filtered"] > 0


@pytest.mark.parametrize("kind", sorted(SYMMETRIC_KINDS))
def test_symmetric_flavour_on_both_ends_fails(kind):
    lab = PairLab(kind, kind, client_kw=PLAIN)
    assert lab.ping_pong(8) == (0, 0)


def test_two_clients_behind_one_nat_without_hairpin_fail():
    lab = PairLab("port_restricted", shared=True, client_kw=PLAIN)
    assert lab.ping_pong(8) == (0, 0)
    assert lab.net.stats["udp_no_hairpin"] > 0


def test_the_same_topologies_pass_where_rfc_4380_can():
    """The control: cone-type NATs on both ends, and one NAT that hairpins, work today."""
    assert PairLab("port_restricted", "port_restricted", client_kw=PLAIN).ping_pong(4) == (4, 4)
    hair = PairLab("port_restricted", shared=True, hairpin=True, client_kw=PLAIN)
    assert hair.ping_pong(4) == (4, 4)
