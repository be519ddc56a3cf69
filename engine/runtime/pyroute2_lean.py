"""Load the parts of pyroute2 the engine uses without running the package's ``__init__``.

pyroute2's ``__init__`` imports every family it supports (conntrack, devlink, ethtool, IPDB,
NDB, ipset, nftables, wireguard...) so that ``from pyroute2 import X`` works for any X.  The
engine needs `IPRoute`, the netlink exceptions and three rtnetlink group constants.  Measured
on the test machine with pyroute2 0.9 (fresh interpreter, three runs each): the whole package
is 163 modules and about 22 MiB of RSS, the submodules alone 99 modules and about 16 MiB, in
roughly 60 % of the time.  Both a client's qualification (its parent adds the address only once
pyroute2 is loaded) and every instance's memory gain from that (docs/performance.md).

How: a package module object made from pyroute2's own import spec, with its ``__path__`` but
without executing ``__init__``, is placed in ``sys.modules``; submodule imports then resolve
through that path as usual.  Should any code ask the package for a public name it did not
import from a submodule (``pyroute2.IPRoute``), the module's ``__getattr__`` runs the real
``__init__`` once, in place, and answers: nothing that uses pyroute2 the documented way breaks.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def install() -> ModuleType:
    """Make ``import pyroute2.<submodule>`` skip the package ``__init__``; idempotent, and a
    no-op when pyroute2 is already imported the usual way."""
    loaded = sys.modules.get("pyroute2")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed")
    package = importlib.util.module_from_spec(spec)

    def full_package(name: str) -> object:
        # `from pyroute2 import config` asks the package first: a submodule is the answer
        try:
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"pyroute2.{name}":
                raise
        # a name only the real __init__ defines: run it now, once, in place
        del package.__getattr__
        spec.loader.exec_module(package)  # type: ignore[union-attr]
        return getattr(package, name)

    package.__getattr__ = full_package  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package
    return package


class _Discard:
    """The logger `pyroute2.netlink` gets from `quiet_logging`: every call is dropped."""

    __slots__ = ()

    def _drop(self, *_args: object, **_kwargs: object) -> None:
        return None

    debug = info = warning = warn = error = exception = critical = log = _drop
    setLevel = addHandler = removeHandler = addFilter = removeFilter = _drop

    def isEnabledFor(self, _level: int) -> bool:
        return False

    def getChild(self, _suffix: str) -> _Discard:
        return self


DISCARD = _Discard()


class quiet_logging:  # used as a `with` statement, like contextlib's helpers
    """While pyroute2's modules are imported, ``import logging`` gives them a stand-in whose
    loggers drop every message.

    Why: `pyroute2.netlink` imports `logging` only for its own log calls, and the engine wants
    none of them (an attribute it cannot decode is logged with a traceback; `rtnl_min` counts
    such a message as malformed itself).  Without it a relay's tree is 0.16 MiB smaller, a
    client's 0.25 MiB, and a client's time from its Router Advertisement to its address fell
    from 10.0 to 6.5 ms (docs/performance.md, "The night pass").  The stand-in lives in
    ``sys.modules`` only for the ``with`` block, so whatever imports `logging` later gets the
    real one; a name the stand-in does not have is looked up in the real module.  Where
    `logging` is already imported (a test run, an embedding program), nothing is replaced:
    pyroute2's logger gets a `NullHandler` and stops propagating, for the same effect."""

    def __enter__(self) -> None:
        self.stand_in: ModuleType | None = None
        real = sys.modules.get("logging")
        if real is not None:
            quiet = real.getLogger("pyroute2")  # type: ignore[attr-defined]
            quiet.addHandler(real.NullHandler())  # type: ignore[attr-defined]
            quiet.propagate = False
            return
        stand_in = ModuleType("logging", "pyroute2's stand-in logging "
                                         "(engine.runtime.pyroute2_lean.quiet_logging)")

        def get_logger(_name: str | None = None) -> _Discard:
            return DISCARD

        def real_name(name: str) -> object:
            if name.startswith("__"):  # the import system asking (``__path__``): not a name
                raise AttributeError(name)
            self._leave()
            return getattr(importlib.import_module("logging"), name)

        stand_in.getLogger = get_logger  # type: ignore[attr-defined]
        for name in ("debug", "info", "warning", "warn", "error", "exception", "critical",
                     "log"):
            setattr(stand_in, name, DISCARD._drop)
        stand_in.__getattr__ = real_name  # type: ignore[attr-defined]
        self.stand_in = stand_in
        sys.modules["logging"] = stand_in

    def _leave(self) -> None:
        if self.stand_in is not None and sys.modules.get("logging") is self.stand_in:
            del sys.modules["logging"]

    def __exit__(self, *_exc: object) -> None:
        self._leave()


class _Annotation:
    """What every name of `annotation_typing`'s stand-in is: subscripting, calling or joining
    it with ``|`` gives it back, which is all an annotation evaluated at definition time
    (``Optional[str]``, ``TypeVar("T", bound=type)``, ``Callable[..., Any]``) does with it."""

    __slots__ = ()

    def __getitem__(self, _item: object) -> _Annotation:
        return self

    def __call__(self, *_args: object, **_kwargs: object) -> _Annotation:
        return self

    def __or__(self, _other: object) -> _Annotation:
        return self

    __ror__ = __or__

    def __repr__(self) -> str:
        return "<annotation-only typing stand-in>"


ANNOTATION = _Annotation()

#: The `typing` names pyroute2's modules use at import time only to annotate: its netlink
#: package ``Dict``, its ``common`` module the rest (pyroute2 0.9).
ANNOTATION_NAMES = ("Any", "Callable", "Dict", "List", "Literal", "Optional", "Tuple",
                    "TypeVar", "Union")


class annotation_typing:  # used as a `with` statement, like `quiet_logging`
    """While pyroute2's modules are imported, ``import typing`` gives them a stand-in whose
    names only serve annotations.

    Why: `pyroute2.netlink` and `pyroute2.common` import `typing` for their annotations and
    nothing else, and `typing` (with what it pulls in) is about 0.5 MiB of every instance's
    tree, which the engine's own modules no longer import at run time (docs/performance.md,
    "Without typing").  The stand-in lives in ``sys.modules`` only for the ``with`` block; a
    name it does not hold (``Generic``, ``NamedTuple``: anything used at run time) is looked
    up in the real module, which is then imported for good, so a newer pyroute2 that needs
    more of `typing` still works, only without the saving.  Where `typing` is already
    imported, nothing is replaced."""

    def __enter__(self) -> None:
        self.stand_in: ModuleType | None = None
        if "typing" in sys.modules:
            return
        stand_in = ModuleType("typing", "pyroute2's annotation-only typing "
                                        "(engine.runtime.pyroute2_lean.annotation_typing)")
        for name in ANNOTATION_NAMES:
            setattr(stand_in, name, ANNOTATION)
        stand_in.TYPE_CHECKING = False  # type: ignore[attr-defined]

        def real_name(name: str) -> object:
            if name.startswith("__"):  # the import system asking (``__path__``): not a name
                raise AttributeError(name)
            self._leave()
            return getattr(importlib.import_module("typing"), name)

        stand_in.__getattr__ = real_name  # type: ignore[attr-defined]
        self.stand_in = stand_in
        sys.modules["typing"] = stand_in

    def _leave(self) -> None:
        if self.stand_in is not None and sys.modules.get("typing") is self.stand_in:
            del sys.modules["typing"]

    def __exit__(self, *_exc: object) -> None:
        self._leave()
