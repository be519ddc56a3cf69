"""engine.proto.rfc6081 on its own: NAT classes, the bounded records, and the rules that
decide when a peer's trailers make us send or accept anything (docs/protocol.md §13)."""

from __future__ import annotations

import pytest

from engine.config.loader import parse_config
from engine.proto.rfc6081 import (
    HAIRPINNING,
    MAX_RECORDS,
    NAT_CONE,
    NAT_PRESERVING,
    NAT_SEQUENTIAL,
    NAT_SYMMETRIC,
    PORT_PREDICTION,
    PROBE_WINDOW,
    SYMMETRIC,
    ExtensionSet,
    Rfc6081,
    classify,
)
from engine.proto.trailers import Trailers

PEER = bytes.fromhex("20010000cb00710a00000000000000aa")
OTHER = bytes.fromhex("20010000cb00710a00000000000000bb")
ME = ("198.51.100.1", 20000)


def _ext(**kw) -> Rfc6081:
    x = Rfc6081(ExtensionSet(**kw), lambda k: 0x12345678 & ((1 << k) - 1))
    x.local_port, x.local_ips = 41111, ["10.1.0.2"]
    x.qualified(ME)
    return x


@pytest.mark.parametrize("second,local,kind", [
    (("198.51.100.1", 20000), 41111, NAT_CONE),
    (("198.51.100.1", 20001), 41111, NAT_SEQUENTIAL),
    (("198.51.100.1", 20016), None, NAT_SEQUENTIAL),
    (("198.51.100.1", 20017), None, NAT_SYMMETRIC),
    (("198.51.100.1", 19999), None, NAT_SYMMETRIC),
    (("198.51.100.1", 33333), 20000, NAT_PRESERVING),
    (("198.51.100.9", 20000), 20000, NAT_SYMMETRIC),
])
def test_classify(second, local, kind):
    assert classify(ME, second, local) == kind


def test_sequential_prediction_moves_on_with_each_new_peer():
    x = _ext()
    x.probed_secondary(("198.51.100.1", 20001))
    assert x.seq_next == 20002
    tr = x.bubble_trailers(PEER, "198.51.100.2", 0)
    x.opened_mapping()
    assert tr.random_port == 20002 and x.bubble_trailers(PEER, "198.51.100.2", 1).random_port \
        == 20002  # a retry keeps its prediction
    assert x.bubble_trailers(OTHER, "198.51.100.3", 1).random_port == 20003


def test_everything_off_adds_no_trailer():
    x = Rfc6081(ExtensionSet.none(), lambda k: 1)
    assert not x.qualified(ME)  # no NAT probe either
    assert not x.bubble_trailers(PEER, "198.51.100.1", 0)
    assert x.on_indirect(("198.51.100.2", 5000), Trailers(nonce=b"abcd", random_port=9), 0) \
        == []


def test_indirect_bubble_probes_the_window_and_the_alternates_behind_our_nat():
    x = _ext()
    out = x.on_indirect(("198.51.100.2", 5000), Trailers(nonce=b"abcd", random_port=7000), 0)
    assert [ep for ep, _ in out] == [("198.51.100.2", 7000 + i) for i in range(PROBE_WINDOW)]
    # alternates are honoured only from behind our own NAT (the same public IPv4)
    alt = Trailers(nonce=b"abcd", alternates=(("10.2.0.2", 42222),))
    assert x.on_indirect(("198.51.100.2", 5000), alt, 0) == []
    assert x.on_indirect(("198.51.100.1", 5000), alt, 0) == [(("10.2.0.2", 42222), HAIRPINNING)]


def test_alternates_sent_are_at_most_two_usable_local_addresses():
    """The published Alternate Address layout asks senders for at most 2 entries, each a
    unicast address with a port other than 0 (docs/protocol.md §13.1)."""
    x = _ext()
    x.local_ips = ["127.0.0.1", "10.1.0.2", "10.3.0.2", "10.4.0.2"]
    tr = x.bubble_trailers(PEER, ME[0], 0)  # a peer behind our own NAT
    assert tr.alternates == (("10.1.0.2", 41111), ("10.3.0.2", 41111))
    x.local_ips = ["127.0.0.1"]
    assert x.bubble_trailers(OTHER, ME[0], 0).alternates is None


def test_accept_only_probed_endpoints_of_the_same_nat_and_only_for_a_while():
    x = _ext()
    x.on_indirect(("198.51.100.2", 5000), Trailers(nonce=b"abcd", random_port=7000), 0)
    assert x.accept(PEER, "198.51.100.2", ("198.51.100.2", 7001), 1) == 1
    assert x.used[PEER] == {PORT_PREDICTION}
    assert x.accept(OTHER, "198.51.100.3", ("198.51.100.2", 7001), 1) == 0  # another NAT
    assert x.accept(PEER, "198.51.100.2", ("198.51.100.2", 7100), 1) == 0  # not probed
    assert x.accept(PEER, "198.51.100.2", ("198.51.100.2", 7001), 100) == 0  # expired


def test_another_port_of_the_peers_nat_needs_a_nonce_or_our_bubbles():
    x = _ext()
    src = ("198.51.100.2", 6123)
    assert not x.accept_other_port(PEER, src, Trailers(nonce=b"abcd"), 0)
    assert not x.accept_other_port(PEER, src, None, 0)  # we never bubbled it
    x.on_indirect(("198.51.100.2", 5000), Trailers(nonce=b"abcd"), 0)
    assert not x.accept_other_port(PEER, src, Trailers(nonce=b"zzzz"), 1)
    assert x.accept_other_port(PEER, src, Trailers(nonce=b"abcd"), 1)  # its indirect's nonce
    assert x.used[PEER] == {SYMMETRIC}
    ours = x.bubble_trailers(OTHER, "198.51.100.3", 2).nonce
    assert x.accept_other_port(OTHER, ("198.51.100.3", 1), Trailers(nonce=ours), 3)
    assert x.accept_other_port(OTHER, ("198.51.100.3", 1), None, 3)  # a plain answer
    assert not x.accept_other_port(OTHER, ("198.51.100.3", 1), None, 3 + 31)  # too late
    off = _ext(symmetric_nat_support=False)
    off.on_indirect(("198.51.100.2", 5000), Trailers(nonce=b"abcd"), 0)
    assert not off.accept_other_port(PEER, src, Trailers(nonce=b"abcd"), 1)


def test_records_are_bounded():
    x = _ext()
    for i in range(3 * MAX_RECORDS):
        x.on_indirect((f"198.51.{i // 250}.{i % 250 + 1}", 5000), Trailers(nonce=b"abcd"), 0)
    assert len(x._probed) <= MAX_RECORDS and len(x._seen) <= MAX_RECORDS


def test_directives_default_on_and_switch_off():
    text = "ServerAddress 192.0.2.1\nHairpinning off\nSequentialPortNat off\n"
    cfg = parse_config(text, "c.conf", resolver=lambda h: h)
    ext = ExtensionSet.from_config(cfg)
    assert ext == ExtensionSet(hairpinning=False, sequential_port_nat=False)
    relay = parse_config("RelayType relay\nHairpinning on\n", "r.conf", resolver=lambda h: h)
    assert relay.hairpinning is None and any("Hairpinning" in w for w in relay.warnings)


def test_nd_solicitation_is_answered_only_with_server_load_reduction_on():
    sol = Trailers(nonce=b"abcd", nd=0)
    assert _ext().answer_nd(sol) == Trailers(nonce=b"abcd", nd=1)
    assert _ext(server_load_reduction=False).answer_nd(sol) == Trailers(nonce=b"abcd")
    x = _ext()
    x.advertised(PEER, Trailers(nd=1), 0)
    assert x.direct_refresh(PEER, 599) and not x.direct_refresh(PEER, 601)
    assert not x.direct_refresh(OTHER, 0)
