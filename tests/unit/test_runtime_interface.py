"""`engine.runtime.interface.Interface`: which path configures the tunnel, and the hand-over.

A client's first address on the device this object created goes through `rtnl_min` (nothing to
flush, nothing to import); every later change, and every change after a failure, through
pyroute2's handle, which must know what `rtnl_min` set so that it flushes it.  pyroute2 and the
kernel are stood in for: `tests/kernel/test_netlink_ops.py` checks both paths on a real link.
"""

from __future__ import annotations

import socket
import sys
import types
from types import SimpleNamespace
from typing import ClassVar

import pytest

from engine.runtime import interface as itf

A = socket.inet_pton(socket.AF_INET6, "2001:0:cb00:710a:8000:f227:bdf7:ffef")
B = socket.inet_pton(socket.AF_INET6, "2001:0:cb00:710a:8000:f227:bdf7:fffe")
LL = socket.inet_pton(socket.AF_INET6, "fe80::ffff:ffff:ffff")


class FakeTun:
    fd, name, index = -1, "teredo", 7

    def close(self) -> None:
        pass


class FakeTunnelInterface:
    made: ClassVar[list[FakeTunnelInterface]] = []

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self.address: bytes | None = None
        self.mtu: int | None = None
        self.calls: list[tuple] = []
        FakeTunnelInterface.made.append(self)

    def client_up(self, address: bytes, mtu: int) -> None:
        self.calls.append(("up", address, mtu))
        self.address, self.mtu = address, mtu

    def client_down(self) -> None:
        self.calls.append(("down",))
        self.address = None

    def teardown(self) -> None:
        self.calls.append(("teardown",))


@pytest.fixture
def iface(monkeypatch):
    FakeTunnelInterface.made = []
    fake = types.ModuleType("engine.runtime.netlink")
    fake.TunnelInterface = FakeTunnelInterface  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "engine.runtime.netlink", fake)
    monkeypatch.setattr(itf, "open_tun", lambda name: FakeTun())
    monkeypatch.setattr(itf, "prepare_interface", lambda name: None)
    fast: list[tuple] = []
    monkeypatch.setattr(itf.rtnl_min, "configure_fresh", lambda *a: fast.append(a))
    i = itf.Interface()
    i.open(SimpleNamespace(role="client", interface_name="teredo"))
    i.fast_calls = fast  # type: ignore[attr-defined]
    return i


def test_first_address_of_a_fresh_device_needs_no_pyroute2(iface):
    iface.client_up(A, 1280)
    assert iface.fast_calls == [(7, "teredo", 1280, [(LL, 64), (A, 32)], (bytes(16), 0, 1029))]
    assert FakeTunnelInterface.made == []


def test_pyroute2_takes_over_what_rtnl_min_set(iface):
    iface.client_up(A, 1280)
    iface.client_up(A, 1280)  # already so: no flush, no change
    (nl,) = FakeTunnelInterface.made
    assert nl.calls == [] and (nl.address, nl.mtu) == (A, 1280)
    iface.client_up(B, 1280)  # a change: the pyroute2 path (which flushes first)
    assert nl.calls == [("up", B, 1280)]
    assert len(iface.fast_calls) == 1


def test_down_after_the_fast_path_flushes_through_pyroute2(iface):
    iface.client_up(A, 1280)
    iface.client_down()
    (nl,) = FakeTunnelInterface.made
    assert nl.calls == [("down",)]
    iface.client_up(A, 1280)  # the device is not fresh any more
    assert nl.calls == [("down",), ("up", A, 1280)]
    assert len(iface.fast_calls) == 1


def test_a_failed_fast_path_leaves_the_next_up_to_pyroute2(iface, monkeypatch):
    def refuse(*a):
        raise itf.rtnl_min.RtnlError("set MTU/up on teredo: Operation not permitted (errno 1)")

    monkeypatch.setattr(itf.rtnl_min, "configure_fresh", refuse)
    iface.client_up(A, 1280)  # logged, not raised
    assert FakeTunnelInterface.made == []
    iface.client_up(A, 1280)
    (nl,) = FakeTunnelInterface.made
    assert nl.calls == [("up", A, 1280)]


def test_a_device_reopened_after_close_is_fresh_again(iface):
    iface.client_up(A, 1280)
    iface.close()
    iface.open(SimpleNamespace(role="client", interface_name="teredo"))
    iface.client_up(B, 1280)
    assert [c[3] for c in iface.fast_calls] == [[(LL, 64), (A, 32)], [(LL, 64), (B, 32)]]
