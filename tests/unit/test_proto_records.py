"""Counters and events: the records every role hands to the runtime and the status socket."""

import json

import pytest

from engine.proto.counters import COUNTER_NAMES, Counters
from engine.proto.errors import ParseError
from engine.proto.events import (
    InterfaceDown,
    InterfaceUp,
    MappingChanged,
    ServerLost,
    StateChanged,
)
from engine.proto.records import FrozenInstanceError


def test_counters_start_at_zero_and_serialise():
    c = Counters()
    d = c.as_dict()
    assert set(d) == {*COUNTER_NAMES, "drops"}
    assert all(d[name] == 0 for name in COUNTER_NAMES)
    assert d["drops"] == {}
    json.dumps(d)


def test_counters_count_and_snapshot_is_a_copy():
    c = Counters()
    c.udp_in_packets += 2
    c.udp_in_bytes += 100
    c.raw6_out_bytes += 7
    c.drop("not_teredo")
    c.drop("not_teredo")
    c.drop("bad_origin")
    d = c.as_dict()
    assert (d["udp_in_packets"], d["udp_in_bytes"], d["raw6_out_bytes"]) == (2, 100, 7)
    assert d["drops"] == {"not_teredo": 2, "bad_origin": 1}
    c.drop("bad_origin")
    assert d["drops"]["bad_origin"] == 1
    assert c.drops["bad_origin"] == 2


def test_counters_reject_unknown_attributes():
    c = Counters()
    with pytest.raises(AttributeError):
        c.udp_in_pakets = 1  # a typo must not silently create a new counter


def test_events_are_immutable_values():
    up = InterfaceUp(bytes(16), 1280)
    assert up == InterfaceUp(bytes(16), 1280)
    with pytest.raises(FrozenInstanceError):
        up.mtu = 1400
    assert InterfaceDown() == InterfaceDown()
    assert ServerLost() != InterfaceDown()
    assert StateChanged("qualified", "2001:0::1").detail == "2001:0::1"
    m = MappingChanged(None, ("198.51.100.1", 50092))
    assert m.old is None and m.new == ("198.51.100.1", 50092)


def test_parse_error_is_a_value_error_with_a_field():
    e = ParseError("auth.id_len", "overruns the datagram")
    assert isinstance(e, ValueError)
    assert e.field == "auth.id_len"
    assert str(e) == "auth.id_len: overruns the datagram"
    import pickle

    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.field, str(e2)) == (e.field, str(e))
