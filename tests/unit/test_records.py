"""`engine.proto.records` against the standard library's `dataclasses`: the same class written
with each must behave the same (construction, defaults, repr, equality, hashing, immutability,
pickling, `replace`), since the engine's records were dataclasses until the start-up diet
(docs/performance.md)."""

from __future__ import annotations

import dataclasses
import pickle
from types import MappingProxyType

import pytest

from engine.proto import records


def make(module):
    """Four record classes written with `module`'s decorator (records or dataclasses)."""

    @module.dataclass(frozen=True, slots=True)
    class Point:
        """A frozen slotted record, like the protocol's per-packet values."""

        x: int
        y: bytes = b""

    @module.dataclass(slots=True)
    class Packet:
        ipv6: bytes
        trailer_len: int = 0
        remainder: bytes | None = None

        def __post_init__(self) -> None:
            if self.remainder is None:
                self.remainder = self.ipv6

    @module.dataclass(frozen=True)
    class Config:
        role: str
        extra: list = module.field(default_factory=list)
        lines: object = module.field(default_factory=lambda: MappingProxyType({}))

    @module.dataclass
    class Plain:
        a: int
        b: str = "b"

    return Point, Packet, Config, Plain


OURS = make(records)
THEIRS = make(dataclasses)


def test_same_behaviour_as_dataclasses():
    for (ours, theirs) in zip(OURS, THEIRS, strict=True):
        assert ours.__match_args__ == theirs.__match_args__
    (p, pk, c, pl), (tp, tpk, _tc, tpl) = OURS, THEIRS
    assert repr(p(1, b"z")) == repr(tp(1, b"z"))
    assert repr(pk(b"ab")) == repr(tpk(b"ab"))
    assert repr(pl(3)) == repr(tpl(3))
    assert p(1) == p(1) and p(1) != p(2) and p(1) != tp(1)
    assert hash(p(1, b"q")) == hash(p(1, b"q"))
    assert {p(1), p(1), p(2)} == {p(1), p(2)}
    assert pk(b"ab").remainder == tpk(b"ab").remainder == b"ab"
    assert pk(b"ab", 2, b"cd").remainder == b"cd"
    assert not hasattr(p(1), "__dict__") and not hasattr(pk(b""), "__dict__")
    assert hasattr(c("relay"), "__dict__")
    assert c("relay").extra is not c("relay").extra  # a fresh default each time
    for cls in (pl, pk, tpl, tpk):  # mutable and compared by value: unhashable
        with pytest.raises(TypeError):
            hash(cls(b"x") if cls in (pk, tpk) else cls(1))
    with pytest.raises(TypeError):
        p()  # a missing argument


def test_frozen_records_refuse_assignment():
    point = OURS[0](1)
    with pytest.raises(records.FrozenInstanceError):
        point.x = 2
    with pytest.raises(AttributeError):  # as dataclasses' FrozenInstanceError is one
        del point.y
    config = OURS[2]("client")
    with pytest.raises(records.FrozenInstanceError):
        config.role = "relay"


def test_pickle_round_trip_of_frozen_and_slotted_records():
    """A reloaded config travels to the worker as a pickle (`engine.runtime.channel`)."""
    from engine.proto.ratelimit import Rate
    from engine.proto.server import ServerLimits
    from engine.proto.wire import Teredo

    for obj in (Rate(5.0, 10.0), Teredo(None, None, b"ab", 1), ServerLimits()):
        obj2 = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        assert obj2 == obj and type(obj2) is type(obj)


def test_fields_replace_and_is_dataclass():
    point_cls = OURS[0]
    assert [f.name for f in records.fields(point_cls)] == ["x", "y"]
    assert [f.name for f in records.fields(point_cls(1))] == ["x", "y"]
    assert records.is_dataclass(point_cls) and records.is_dataclass(point_cls(1))
    assert not records.is_dataclass(object())
    assert records.replace(point_cls(1, b"a"), y=b"b") == point_cls(1, b"b")
    with pytest.raises(TypeError):
        records.replace(point_cls(1), z=3)
    with pytest.raises(TypeError):
        records.fields(object())


def test_definition_errors_are_those_of_dataclasses():
    with pytest.raises(TypeError):
        @records.dataclass
        class Bad:
            a: int = 0
            b: int

    with pytest.raises(ValueError):
        @records.dataclass
        class Shared:
            a: list = []  # noqa: RUF012 - the mistake under test

    with pytest.raises(ValueError):
        records.field(default=1, default_factory=int)


def test_the_engine_records_are_records():
    """The engine's own value types were converted, not left as dataclasses."""
    from engine.config.model import EngineConfig
    from engine.proto.wire import Teredo
    from engine.runtime.channel import Up

    for cls in (EngineConfig, Teredo, Up):
        assert records.is_dataclass(cls) and not dataclasses.is_dataclass(cls)


def test_init_is_compiled_on_the_first_instance_and_behaves_the_same_before_and_after():
    """Records compile their ``__init__`` when the class is first used, not at import
    (start-up time): the first call, a failed first call and the later calls all behave like
    a dataclass's, and a subclass that is not a record shares its base's compiled one."""
    Point, Packet, _, _ = make(records)
    stand_in = Point.__init__
    with pytest.raises(TypeError):
        Point()  # the first call fails: missing x, as with dataclasses
    assert Point(1) == Point(x=1, y=b"")
    assert Point.__init__ is not stand_in
    assert Point.__init__.__qualname__.endswith("Point.__init__")
    with pytest.raises(records.FrozenInstanceError):
        Point(2).x = 3

    class Bigger(Packet):  # not a record itself: inherits Packet's __init__
        pass

    first = Bigger(b"\x60")
    assert (first.ipv6, first.trailer_len) == (b"\x60", 0)
    assert Packet(b"\x60", 4).trailer_len == 4
    assert "__init__" not in vars(Bigger)
