"""Ping test (spec §5.7) and the ICMPv6 error budget (§5.9): authenticated echo, 30 s lifetime,
the Destination Unreachable kludge, and 10 errors per whole second."""

from __future__ import annotations

from engine.proto.icmp_limit import IcmpErrorLimiter
from engine.proto.pingtest import PingTest
from engine.proto.wire import build_icmpv6, dest_unreachable
from tests.sim.simnet import echo_reply_for

US = bytes.fromhex("20010000c00002012c5a63bf39cc9bf8")
HOST = bytes.fromhex("20010db8000000000000000000000001")
KEY = bytes(range(16))


def test_request_layout_fits_88_bytes_and_hop_limit_128():
    req = PingTest(KEY, 0x1234).request(US, HOST, 0x65A1B2C3)
    assert len(req) == 66 and req[4:6] == b"\x00\x1a" and req[7] == 128
    assert req[40] == 128 and req[44:46] == b"\x12\x34"
    assert req[46:48] == b"\xb2\xc3" and req[48:50] == b"\x65\xa1"  # seq = low 16, then high 16


def test_reply_verifies_within_30_seconds_only():
    pt = PingTest(KEY, 0x1234)
    reply = echo_reply_for(pt.request(US, HOST, 1000))
    assert pt.verify(reply, US, 1000)
    assert pt.verify(reply, US, 1029)
    assert not pt.verify(reply, US, 1030)
    assert not pt.verify(reply, US, 999)  # from the future: wraps to a huge age


def test_reply_forgeries_fail():
    pt = PingTest(KEY, 0x1234)
    reply = bytearray(echo_reply_for(pt.request(US, HOST, 1000)))
    assert not PingTest(bytes(16), 0x1234).verify(bytes(reply), US, 1000)  # other key
    assert not PingTest(KEY, 0x1235).verify(bytes(reply), US, 1000)  # other id
    other = bytes(reply[:8]) + bytes.fromhex("20010db8" + "00" * 11 + "02") + bytes(reply[24:])
    assert not pt.verify(other, US, 1000)  # another host echoing our MAC
    reply[60] ^= 1
    assert not pt.verify(bytes(reply), US, 1000)


def test_destination_unreachable_kludge():
    pt = PingTest(KEY, 7)
    req = pt.request(US, HOST, 500)
    assert pt.verify(dest_unreachable(HOST, US, 1, req), US, 510)
    # from somebody else than the pinged host: refused
    router = bytes.fromhex("20010db8000000000000000000000fe1")
    assert not pt.verify(dest_unreachable(router, US, 1, req), US, 510)
    # echo request type but not an echo reply: refused
    assert not pt.verify(build_icmpv6(HOST, US, 128, 0, req[44:66]), US, 500)


def test_icmp_budget_per_whole_second():
    lim = IcmpErrorLimiter()
    assert [lim.allow(5) for _ in range(12)] == [True] * 10 + [False] * 2
    assert lim.allow(6) and lim.suppressed == 2
