"""The engine's record classes, without the standard library's `dataclasses`.

The subset of `dataclasses` the engine uses (``@dataclass`` with ``frozen`` and ``slots``,
``field(default_factory=...)``, ``__post_init__``, `fields`, `replace`, `is_dataclass`), with
the same generated ``__init__`` (one compiled function per class, as `dataclasses` writes it),
the same ``repr``, equality, hashing and immutability, and pickling of frozen slotted records.

Why not `dataclasses` itself: it imports `inspect`, and with it `ast`, `dis`, `tokenize` and
`enum`, about 1.5 MiB of every engine process and ~10 ms before the first packet, and it
spends about 0.5-0.8 ms per class (several `exec` calls each) on some forty classes, all of it
before a client's first Router Solicitation (docs/performance.md, "Qualification").  Here a
class costs one small `exec`.
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any


class FrozenInstanceError(AttributeError):
    """An assignment to (or deletion of) a field of a frozen record."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field of a record: its name and its default or default factory."""

    __slots__ = ("default", "default_factory", "name")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r})")


def field(*, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A field's default (`default`) or a function making a fresh one (`default_factory`)."""
    return Field(default, default_factory)


_FIELDS = "__record_fields__"


def fields(class_or_instance: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in definition order."""
    try:
        return tuple(getattr(class_or_instance, _FIELDS).values())
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def is_dataclass(obj: Any) -> bool:
    """Whether `obj` is a record class or instance."""
    cls = obj if isinstance(obj, type) else type(obj)
    return hasattr(cls, _FIELDS)


def replace(obj: Any, /, **changes: Any) -> Any:
    """A new record like `obj` with `changes` (``__init__`` and ``__post_init__`` run again)."""
    if isinstance(obj, type) or not hasattr(obj, _FIELDS):
        raise TypeError("replace() should be called on record instances")
    kwargs = {name: getattr(obj, name) for name in getattr(obj, _FIELDS)}
    kwargs.update(changes)
    return obj.__class__(**kwargs)


def dataclass(cls: type | None = None, /, *, frozen: bool = False, slots: bool = False) -> Any:
    """Make `cls` a record: ``__init__``, ``__repr__``, ``__eq__`` (and ``__hash__`` when
    frozen) from its annotated fields, like ``dataclasses.dataclass(frozen=, slots=)``."""

    def wrap(cls: type) -> type:
        return _process(cls, frozen, slots)

    return wrap if cls is None else wrap(cls)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _process(cls: type, frozen: bool, slots: bool) -> type:
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        found.update(getattr(base, _FIELDS, {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value)
        f.name = name
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not "
                             "allowed: use default_factory")
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found[name] = f
    names = tuple(found)
    seen_default = False
    for f in found.values():
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default

    body = cls.__dict__
    init, home = _deferred_init(found, frozen, hasattr(cls, "__post_init__"))
    methods: dict[str, Any] = {"__init__": init, "__match_args__": names}
    if "__repr__" not in body:
        methods["__repr__"] = _make_repr(names)
    if "__eq__" not in body:
        methods["__eq__"] = _make_eq(names)
    if frozen:
        methods["__setattr__"] = _frozen_setattr
        methods["__delattr__"] = _frozen_delattr
        if "__hash__" not in body or body["__hash__"] is None:
            methods["__hash__"] = _make_hash(names)
    elif "__hash__" not in body:
        methods["__hash__"] = None  # mutable and compared by value: unhashable, as dataclasses
    for key, value in methods.items():
        if key in ("__setattr__", "__delattr__") and key in body:
            raise TypeError(f"cannot overwrite attribute {key} in class {cls.__name__}")
        if key in ("__init__", "__repr__", "__eq__", "__hash__") and value is not None:
            value.__qualname__ = f"{cls.__qualname__}.{key}"
        setattr(cls, key, value)
    if slots:
        cls = _with_slots(cls, names, frozen)
    setattr(cls, _FIELDS, found)
    home.append(cls)
    return cls


def _deferred_init(found: dict[str, Field], frozen: bool,
                   post_init: bool) -> tuple[Any, list[type]]:
    """A stand-in ``__init__`` that compiles the real one on the class's first instance and
    puts it in its place.  Compiling costs about 0.2 ms a class, and most record classes on
    the run path (config, channel messages, errors) are made later or never: done at import,
    it was 6 ms of a client's time to its first Router Solicitation (docs/performance.md,
    "Qualification").  The class is known only once `_with_slots` has made it, hence `home`."""
    home: list[type] = []

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        owner = home[0]
        real = _make_init(owner, found, frozen, post_init)
        real.__qualname__ = f"{owner.__qualname__}.__init__"
        type.__setattr__(owner, "__init__", real)
        real(self, *args, **kwargs)

    return __init__, home


def _make_init(cls: type, found: dict[str, Field], frozen: bool, post_init: bool) -> Any:
    """``__init__`` compiled from source, as `dataclasses` does: as fast as a hand-written one
    (records are made per packet on the data path)."""
    env: dict[str, Any] = {"MISSING": MISSING, "_setattr": object.__setattr__}
    params = ["self"]
    lines = []
    for f in found.values():
        value = f.name
        if f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=MISSING")
            value = f"_factory_{f.name}() if {f.name} is MISSING else {f.name}"
        elif f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
        if frozen:
            lines.append(f"  _setattr(self, {f.name!r}, {value})")
        else:
            lines.append(f"  self.{f.name} = {value}")
    if post_init:
        lines.append("  self.__post_init__()")
    source = (f"def __create__({', '.join(env)}):\n"
              f" def __init__({', '.join(params)}):\n"
              + "\n".join(" " + line for line in lines or ["  pass"])
              + "\n return __init__\n")
    ns: dict[str, Any] = {}
    exec(source, {"__builtins__": __builtins__}, ns)
    init = ns["__create__"](**env)
    init.__module__ = cls.__module__
    return init


def _make_repr(names: tuple[str, ...]) -> Any:
    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({inner})"

    return __repr__


def _values(names: tuple[str, ...]) -> Any:
    if not names:
        return lambda _obj: ()
    get = attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (get(obj),)
    return get


def _make_eq(names: tuple[str, ...]) -> Any:
    values = _values(names)

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _make_hash(names: tuple[str, ...]) -> Any:
    values = _values(names)

    def __hash__(self: Any) -> int:
        return hash(values(self))

    return __hash__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _with_slots(cls: type, names: tuple[str, ...], frozen: bool) -> type:
    """The class again, with ``__slots__`` for its fields (a class cannot gain slots after it
    is made, so `dataclasses` makes a new one too)."""
    body = dict(cls.__dict__)
    inherited = {s for base in cls.__mro__[1:-1] for s in base.__dict__.get("__slots__", ())}
    body["__slots__"] = tuple(n for n in names if n not in inherited)
    for name in names:
        body.pop(name, None)  # the defaults live in __init__: a class attribute would clash
    body.pop("__dict__", None)
    body.pop("__weakref__", None)
    if frozen:  # pickle restores slots with setattr, which a frozen record refuses
        body.setdefault("__getstate__", _slots_getstate)
        body.setdefault("__setstate__", _slots_setstate)
    new = type(cls)(cls.__name__, cls.__bases__, body)
    new.__qualname__ = cls.__qualname__
    return new


def _slots_getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in fields(self)]


def _slots_setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(fields(self), state, strict=True):
        object.__setattr__(self, f.name, value)
