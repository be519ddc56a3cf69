"""prctl(2) and capset(2): the Linux calls the privilege separation makes that the standard
library has no binding for.

Users: the worker's ``PR_SET_NO_NEW_PRIVS`` and ``PR_SET_PDEATHSIG`` (`privsep`, `signals`),
and the parent's capability drop (`capabilities`: ``PR_CAPBSET_READ``/``PR_CAPBSET_DROP``,
``capset``).  Two implementations with one behaviour, chosen at import: the compiled
`_privcalls` (engine/runtime/_privcalls.c, built with the project like `_fastloop`) when it
is built, and ctypes, the reference, when it is not.  Why the compiled one: ctypes (with
libffi) was about 2 ms of every instance's start before its fork, the path to a client's
first Router Solicitation, and 0.3 MiB of every instance's tree (docs/performance.md,
"Without ctypes").  Either is loaded at import, while the process can still read the
standard library: the worker calls them after its chroot.
"""

from __future__ import annotations

import os
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

Prctl = Callable[[int, int], int]
Capset = Callable[[int, int, int], None]


def ctypes_calls() -> tuple[Prctl, Capset]:
    """The ctypes versions of `prctl` and `capset` (the reference; the tests run both)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    class Data(ctypes.Structure):
        _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32))

    def failed() -> OSError:
        err = ctypes.get_errno()
        return OSError(err, os.strerror(err))

    def prctl(option: int, arg2: int) -> int:
        r = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
        if r == -1:
            raise failed()
        return int(r)

    def capset(effective: int, permitted: int, inheritable: int) -> None:
        data = (Data * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        if libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
            raise failed()

    return prctl, capset


try:
    from engine.runtime import _privcalls  # type: ignore[attr-defined]
except ImportError:  # not built (a source tree without build_ext)
    prctl, capset = ctypes_calls()
    IMPLEMENTATION = "ctypes"
else:
    prctl, capset = _privcalls.prctl, _privcalls.capset
    IMPLEMENTATION = "compiled"

__all__ = ["IMPLEMENTATION", "PR_CAPBSET_DROP", "PR_CAPBSET_READ", "PR_SET_NO_NEW_PRIVS",
           "PR_SET_PDEATHSIG", "capset", "ctypes_calls", "prctl"]
