"""engine.runtime.capabilities: the parent's capability sets really shrink, bounding set included.

Each check runs in a forked child so the test process keeps its own capabilities, and on both
implementations of `engine.runtime.privcalls` (the compiled `_privcalls`, ctypes)."""

from __future__ import annotations

import json
import os

import pytest

from engine.runtime import capabilities as caps
from engine.runtime import privcalls


@pytest.fixture(params=("compiled", "ctypes"), autouse=True)
def calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both implementations of prctl/capset.  A missing compiled module skips
    its case, which `make test` (``TEREDO_TESTS_NO_SKIP=1``) turns into a failure."""
    if request.param == "compiled":
        try:
            from engine.runtime import _privcalls  # type: ignore[attr-defined]
        except ImportError as e:
            pytest.skip(f"engine.runtime._privcalls is not built: {e}")
        prctl, capset = _privcalls.prctl, _privcalls.capset
    else:
        prctl, capset = privcalls.ctypes_calls()
    monkeypatch.setattr(privcalls, "prctl", prctl)
    monkeypatch.setattr(privcalls, "capset", capset)
    return request.param


def in_child(fn) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            out = {"ok": fn()}
        except BaseException as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return caps.current(f.read())


def test_mask_and_names_round_trip():
    m = caps.mask(caps.PARENT_CAPABILITIES)
    assert sorted(caps.names_of(m)) == sorted(caps.PARENT_CAPABILITIES)
    with pytest.raises(KeyError):
        caps.mask(["no_such_cap"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hold capabilities to drop")
def test_keep_only_shrinks_every_set_and_the_bounding_set():
    def run():
        kept = caps.keep_only(caps.PARENT_CAPABILITIES)
        return {"kept": kept, **_status()}

    got = in_child(run)
    assert "error" not in got, got
    st = got["ok"]
    want = caps.mask(caps.PARENT_CAPABILITIES)
    assert st["kept"] == want
    assert st["CapEff"] == want and st["CapPrm"] == want and st["CapInh"] == 0
    assert st["CapBnd"] == want  # an exec of a setuid-root binary cannot regain the rest


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hold capabilities to drop")
def test_a_dropped_capability_is_really_gone():
    """CAP_DAC_OVERRIDE dropped: a mode-000 file of another user can no longer be read."""
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        os.chown(f.name, 65534, 65534)

        def run():
            with open(f.name, "rb"):
                pass  # root reads it before the drop
            caps.keep_only(caps.PARENT_CAPABILITIES)
            try:
                open(f.name, "rb").close()
            except PermissionError:
                return "denied"
            return "still readable"

        assert in_child(run) == {"ok": "denied"}


def test_prctl_answers_and_fails_with_errno():
    """A value back (PR_GET_NO_NEW_PRIVS after PR_SET_NO_NEW_PRIVS, as the worker sets it),
    and OSError with the kernel's errno for an option it refuses."""
    import errno

    def run():
        before = privcalls.prctl(39, 0)  # PR_GET_NO_NEW_PRIVS
        privcalls.prctl(privcalls.PR_SET_NO_NEW_PRIVS, 1)
        after = privcalls.prctl(39, 0)
        try:
            privcalls.prctl(privcalls.PR_CAPBSET_READ, 4096)
        except OSError as e:
            return [before, after, e.errno]
        return [before, after, None]

    assert in_child(run) == {"ok": [0, 1, errno.EINVAL]}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hold capabilities to drop")
def test_capset_cannot_take_back_what_was_dropped():
    """After the drop, asking for CAP_SYS_ADMIN again is EPERM, named by `CapabilityError`
    on the way in and by OSError from the call itself."""
    import errno

    def run():
        caps.keep_only(caps.PARENT_CAPABILITIES)
        everything = caps.mask(caps.CAP)
        try:
            privcalls.capset(everything, everything, 0)
        except OSError as e:
            return e.errno
        return None

    assert in_child(run) == {"ok": errno.EPERM}
