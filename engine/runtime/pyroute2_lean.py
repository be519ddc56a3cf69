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

import _thread
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
    """The logger `pyroute2.netlink` gets from the lent `logging`: every call is dropped."""

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


def _get_logger(_name: str | None = None) -> _Discard:
    return DISCARD


class _Annotation:
    """What every name of the lent `typing` is: subscripting, calling or joining it with ``|``
    gives it back, which is all an annotation evaluated at definition time (``Optional[str]``,
    ``TypeVar("T", bound=type)``, ``Callable[..., Any]``) does with it."""

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

#: What each module pyroute2's message classes import is lent as while they are imported
#: (pyroute2 0.9: `pyroute2.netlink`, `pyroute2.common`), and why each is enough:
LENT: dict[str, dict[str, object]] = {
    # its own log calls only, which the engine never wants (`rtnl_min` counts a message it
    # cannot decode as malformed itself)
    "logging": {"getLogger": _get_logger,
                **dict.fromkeys(("debug", "info", "warning", "warn", "error", "exception",
                                 "critical", "log"), DISCARD._drop)},
    # annotations only
    "typing": {**dict.fromkeys(("Any", "Callable", "Dict", "List", "Literal", "Optional",
                                "Tuple", "TypeVar", "Union"), ANNOTATION),
               "TYPE_CHECKING": False},
    # a `local` and a `Lock` made at import: the very objects threading's names stand for
    # (`_thread`'s, which the interpreter always has); the rest on first use
    "threading": {"Lock": _thread.allocate_lock, "local": _thread._local,
                  "RLock": _thread.RLock},
    # error paths only, inside functions: the real module on first use
    "traceback": {},
}


def _lend(name: str, names: dict[str, object]) -> ModuleType:
    """A module that answers `names` itself and anything else from the real module, which
    it then imports (and leaves in ``sys.modules``) on that first other lookup."""
    stand_in = ModuleType(name, f"pyroute2's lent {name} (engine.runtime.pyroute2_lean)")
    for key, value in names.items():
        setattr(stand_in, key, value)

    def real_name(key: str) -> object:
        if key.startswith("__"):  # the import system asking (``__path__``): not a name
            raise AttributeError(key)
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), key)

    stand_in.__getattr__ = real_name  # type: ignore[attr-defined]
    return stand_in


class lent_modules:  # used as a `with` statement, like contextlib's helpers
    """While pyroute2's message classes are imported, ``import logging``, ``typing``,
    ``threading`` and ``traceback`` give them stand-ins (`LENT`).

    Why: pyroute2 uses each of them for a small part (its own logging, annotations, one lock
    and one thread-local, tracebacks on error paths), and together with what they import they
    are about 1.2 MiB of every instance's tree, which the engine's own run path does not
    import (docs/performance.md, "The night pass" and "Without typing").  A stand-in is in
    ``sys.modules`` only for the ``with`` block, so whatever imports the module later gets
    the real one; a name it does not hold is looked up in the real module, imported then,
    so pyroute2 code that needs more (or a newer pyroute2) still works, only without the
    saving.  Only the parent ever runs pyroute2's code (the worker, whose chroot cannot read
    the standard library, never calls netlink), so such a late import always can happen.
    A module already imported (a test run, an embedding program) is not replaced; there,
    pyroute2's logger gets a `NullHandler` and stops propagating, for the same silence."""

    def __enter__(self) -> None:
        self.stand_ins: dict[str, ModuleType] = {}
        logging = sys.modules.get("logging")
        if logging is not None:
            quiet = logging.getLogger("pyroute2")  # type: ignore[attr-defined]
            quiet.addHandler(logging.NullHandler())  # type: ignore[attr-defined]
            quiet.propagate = False
        for name, names in LENT.items():
            if name not in sys.modules:
                self.stand_ins[name] = sys.modules[name] = _lend(name, names)

    def __exit__(self, *_exc: object) -> None:
        for name, stand_in in self.stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
