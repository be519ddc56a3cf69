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
