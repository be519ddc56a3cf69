"""The parent's validation of worker requests, and the parent->worker config transfer."""

from __future__ import annotations

import ipaddress
import json

import pytest

from engine.config import load_config
from engine.runtime import channel
from engine.runtime.channel import Down, Ready, Reloaded, RequestError, Up

PREFIX = 0x20010000
ADDR = "2001:0:c633:640a:8000:f227:bdf7:ffef"


def line(**kw) -> bytes:
    return json.dumps(kw).encode()


def test_valid_requests():
    assert channel.parse_worker_request(line(op="ready"), PREFIX) == Ready()
    assert channel.parse_worker_request(line(op="down"), PREFIX) == Down()
    assert channel.parse_worker_request(line(op="reloaded", applied=False), PREFIX) == Reloaded(
        False
    )
    up = channel.parse_worker_request(line(op="up", address=ADDR, mtu=1280), PREFIX)
    assert up == Up(ipaddress.IPv6Address(ADDR).packed, 1280)


def test_up_message_round_trip():
    packed = ipaddress.IPv6Address(ADDR).packed
    msg = channel.up_message(packed, 1400).rstrip(b"\n")
    assert channel.parse_worker_request(msg, PREFIX) == Up(packed, 1400)


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        (line(op="up", address="2002::1", mtu=1280), "outside the Teredo prefix 2001::/32"),
        (line(op="up", address="ff02::1", mtu=1280), "outside the Teredo prefix"),
        (line(op="up", address="fe80::ffff:ffff:ffff", mtu=1280), "outside the Teredo prefix"),
        (line(op="up", address="1.2.3.4", mtu=1280), "is not an IPv6 address"),
        (line(op="up", address=5, mtu=1280), "not an IPv6 address string"),
        (line(op="up", address=ADDR, mtu=1279), "outside 1280-65535"),
        (line(op="up", address=ADDR, mtu=65536), "outside 1280-65535"),
        (line(op="up", address=ADDR, mtu=True), "up.mtu: not an integer"),
        (line(op="up", address=ADDR, mtu="1280"), "up.mtu: not an integer"),
        (line(op="up", address=ADDR, mtu=1280, ifindex=1), "unexpected keys ['ifindex']"),
        (line(op="up", address=ADDR), "missing keys ['mtu']"),
        (line(op="route", dst="::/0"), "unknown request 'route'"),
        (line(op="reloaded", applied=1), "not a boolean"),
        (b"[1, 2]", "not a JSON object"),
        (b"{not json", "not JSON"),
        (b"{" + b" " * 3000 + b"}", "longer than"),
    ],
)
def test_bad_requests_are_refused_with_the_field(msg, needle):
    with pytest.raises(RequestError) as e:
        channel.parse_worker_request(msg, PREFIX)
    assert needle in str(e.value)


def test_other_prefix_is_honoured():
    other = 0x3FFE831F
    addr = "3ffe:831f::1"
    assert channel.parse_worker_request(line(op="up", address=addr, mtu=1280), other)
    with pytest.raises(RequestError):
        channel.parse_worker_request(line(op="up", address=ADDR, mtu=1280), other)


def test_line_buffer_reassembles_and_limits():
    buf = channel.LineBuffer(limit=64)
    assert buf.feed(b'{"op":') == []
    assert buf.feed(b'"ready"}\n{"op":"down"}\n{"o') == [b'{"op":"ready"}', b'{"op":"down"}']
    assert buf.feed(b'p":"down"}\n') == [b'{"op":"down"}']
    with pytest.raises(RequestError):
        buf.feed(b"x" * 100)


def test_reload_message_carries_a_real_config(tmp_path):
    conf = tmp_path / "relay.conf"
    conf.write_text("RelayType cone\nInterfaceMTU 1400\nSyslogFacility local2\n")
    config = load_config(str(conf))
    op, payload = channel.parse_parent_message(channel.reload_message(config).rstrip(b"\n"))
    assert op == "reload"
    assert payload == config
    assert payload.interface_mtu == 1400 and payload.syslog_facility == "local2"
    assert dict(payload.lines) == dict(config.lines)


def test_kick_message():
    assert channel.parse_parent_message(channel.kick_message()) == ("kick", None)
