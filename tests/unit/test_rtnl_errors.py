"""`rtnl_min.Rtnl` turns its socket's own failures into `RtnlError` naming the step, as it
does the kernel's refusals, so that its callers (`netlink`, `relay_link`, `configure_fresh`)
need no wrapper of their own."""

from __future__ import annotations

import errno

import pytest

from engine.runtime import rtnl_min


def test_a_failed_send_names_the_step_and_the_errno() -> None:
    with rtnl_min.Rtnl("tun9") as nl:
        nl.sock.close()  # a real socket error, nothing sent anywhere
        with pytest.raises(rtnl_min.RtnlError) as got:
            nl.link_up(1, 1280)
    assert str(got.value).startswith("set MTU/up on tun9: ")
    assert got.value.errno == errno.EBADF
    assert isinstance(got.value, OSError)


def test_a_failed_dump_names_the_step() -> None:
    with rtnl_min.Rtnl("host") as nl:
        nl.sock.close()
        with pytest.raises(rtnl_min.RtnlError, match=r"^list links on host: "):
            nl.links()
