"""engine.runtime.upnp_keeper: the worker's IGD mapping is got, renewed and given back from a
thread, and its outcome reaches the loop through a pipe (docs/protocol.md §13.8)."""

from __future__ import annotations

import os
import select
import threading

import pytest

from engine.runtime import upnp, upnp_keeper
from engine.runtime.upnp_keeper import UpnpKeeper

IGD = upnp.Igd("http://198.19.0.1:5000/ctl", "urn:schemas-upnp-org:service:WANIPConnection:2",
               "198.19.0.2")


def _mapping(lease: int) -> upnp.Mapping:
    return upnp.Mapping("198.51.100.2", 40000, "198.19.0.2", 40000, lease)


def _wait(keeper: UpnpKeeper):
    assert select.select([keeper.fileno()], [], [], 10)[0], "no outcome from the thread"
    return keeper.take()


def test_maps_renews_and_deletes_at_stop() -> None:
    calls: list[str] = []
    renewed = threading.Event()

    def acquire(lan_ip, port, lease, desc):
        calls.append(f"acquire {lan_ip} {port} {lease}")
        return IGD, _mapping(lease)

    def add(igd, port, lease, desc):
        calls.append(f"add {port} {lease}")
        renewed.set()
        return _mapping(lease)

    k = UpnpKeeper("198.19.0.2", 40000, lease=0, acquire=acquire, add=add,
                   delete=lambda igd, m: calls.append(f"delete {m.external_port}"))
    k.start()
    assert _wait(k) == (("198.51.100.2", 40000, 0), "")
    assert renewed.wait(10)  # lease 0: renewed at once, through the IGD found first
    k.stop()
    assert calls[0] == "acquire 198.19.0.2 40000 0"
    assert calls[1] == "add 40000 0" and calls[-1] == "delete 40000"
    assert not any(c.startswith("acquire") for c in calls[1:])


def test_failure_is_reported_and_retried() -> None:
    tries = []

    def acquire(lan_ip, port, lease, desc):
        tries.append(1)
        if len(tries) == 1:
            raise upnp.UpnpError("SSDP search from 198.19.0.2: no IGD answered")
        return IGD, _mapping(lease)

    deleted = []
    k = UpnpKeeper("198.19.0.2", 40000, retry=0.01, acquire=acquire,
                   delete=lambda igd, m: deleted.append(m))
    k.start()
    first = _wait(k)
    outcomes = [first]
    while outcomes[-1] is None or outcomes[-1][0] is None:
        outcomes.append(_wait(k))
    k.stop()
    assert (None, "SSDP search from 198.19.0.2: no IGD answered") in outcomes
    assert outcomes[-1] == (("198.51.100.2", 40000, 600), "")
    assert len(deleted) == 1


def test_nothing_to_delete_when_nothing_was_mapped() -> None:
    def acquire(*a):
        raise upnp.UpnpError("no")

    deleted = []
    k = UpnpKeeper("198.19.0.2", 40000, retry=3600, acquire=acquire,
                   delete=lambda igd, m: deleted.append(m))
    k.start()
    assert _wait(k) == (None, "no")
    k.stop()
    assert deleted == []


def test_a_thread_still_busy_at_stop_is_left_and_nothing_deleted(monkeypatch) -> None:
    """stop() must fit the parent's wait for a stopping worker: a thread stuck in an exchange
    is not waited for past STOP_JOIN, and what it may be mapping is left to the lease."""
    monkeypatch.setattr(upnp_keeper, "STOP_JOIN", 0.1)
    entered, release = threading.Event(), threading.Event()
    deleted = []

    def add(igd, port, lease, desc):  # a renewal the IGD does not answer
        entered.set()
        release.wait(30)
        return _mapping(lease)

    k = UpnpKeeper("198.19.0.2", 40000, lease=0, acquire=lambda *a: (IGD, _mapping(0)),
                   add=add, delete=lambda igd, m: deleted.append(m))
    k.start()
    assert _wait(k) == (("198.51.100.2", 40000, 0), "")
    assert entered.wait(10)
    k.stop()
    assert deleted == []
    # the numbers of the keeper's pipe, closed by stop(), go to the next file opened; the
    # thread, once its renewal returns, must not write its wake-up byte there
    r, w = os.pipe()
    try:
        assert w == k._wfd, "the test needs the keeper's freed descriptor number"
        release.set()
        assert k._done.acquire(timeout=10), "the thread did not end"
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 16)
    finally:
        os.close(r)
        os.close(w)


def test_stop_without_start() -> None:
    deleted = []
    k = UpnpKeeper("198.19.0.2", 40000, delete=lambda igd, m: deleted.append(m))
    k.stop()
    assert deleted == []
