"""KernelView reads each kernel table once per status pass; every waiter gets the reader's
result or its error (miredoctl/kernelview.py)."""

from __future__ import annotations

import threading

import pytest

from miredoctl.kernelview import KernelError, KernelView


def _race(view: KernelView, read, n: int = 4) -> list[object]:
    """n threads ask for one table while the first reader is held inside `read`."""
    gate = threading.Event()
    calls: list[int] = []

    def held_read():
        calls.append(1)
        gate.wait(5)
        return read()

    results: list[object] = [None] * n

    def ask(i: int) -> None:
        try:
            results[i] = view._once(("links", "ns"), held_read)
        except BaseException as exc:  # the test inspects what each thread got
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    while not calls:
        threading.Event().wait(0.01)
    # let the waiters reach their wait before the reader finishes
    threading.Event().wait(0.05)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1, "the table was read more than once"
    return results


def test_every_waiter_gets_the_one_result() -> None:
    results = _race(KernelView(), lambda: {"teredo": {"ifname": "teredo"}})
    assert all(r == {"teredo": {"ifname": "teredo"}} for r in results)


def test_an_os_error_reaches_every_waiter_as_kernel_error() -> None:
    def read():
        raise FileNotFoundError("ip: not found")

    results = _race(KernelView(), read)
    assert all(isinstance(r, KernelError) and "ip: not found" in str(r) for r in results)


def test_a_bug_in_the_reader_reaches_every_waiter_not_an_empty_table() -> None:
    def read():
        raise KeyError("addr_info")

    results = _race(KernelView(), read)
    assert all(isinstance(r, KeyError) for r in results), results


def test_link_of_a_missing_interface_is_a_kernel_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import miredoctl.kernelview as kv

    monkeypatch.setattr(kv, "_ip_json", lambda netns, *args: [{"ifname": "lo"}])
    view = KernelView()
    assert view.link(None, "lo") == {"ifname": "lo"}
    with pytest.raises(KernelError, match='"teredo" does not exist'):
        view.link(None, "teredo")
