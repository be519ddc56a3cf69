"""Issue 9 flaw 7: the parent's judgement of its worker's heartbeat, and the directive."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config
from engine.runtime import channel, heartbeat
from engine.runtime.heartbeat import KILL, OK, UNRESPONSIVE, Heartbeat


def test_silence_is_reported_once_then_killed_at_the_watchdog():
    hb = Heartbeat(watchdog=10)
    assert hb.check(0.0) == OK  # not armed before the worker is ready
    hb.arm(100.0)
    for t in (100.5, 101.0, 102.9):
        assert hb.check(t) == OK
    assert hb.check(103.0) == UNRESPONSIVE
    assert [hb.check(t) for t in (104.0, 109.9)] == [OK, OK]  # reported once
    assert hb.check(110.0) == KILL


def test_a_pong_clears_the_report_and_says_how_long_it_was_silent():
    hb = Heartbeat(watchdog=10)
    hb.arm(0.0)
    assert hb.beat(0.5) is None  # never reported: nothing to say
    assert hb.check(4.0) == UNRESPONSIVE
    assert hb.beat(5.0) == pytest.approx(4.5)
    assert hb.check(7.0) == OK and hb.check(8.0) == UNRESPONSIVE


def test_watchdog_off_reports_but_never_kills():
    hb = Heartbeat(watchdog=0)
    hb.arm(0.0)
    assert hb.check(heartbeat.REPORT_AFTER) == UNRESPONSIVE
    assert hb.check(1e6) == OK


def test_a_watchdog_shorter_than_the_report_delay_kills_at_the_watchdog():
    hb = Heartbeat(watchdog=2)
    hb.arm(0.0)
    assert hb.check(1.9) == OK
    assert hb.check(2.0) == KILL


def test_disarmed_heartbeat_never_judges():
    hb = Heartbeat(watchdog=2)
    hb.arm(0.0)
    hb.disarm()
    assert hb.check(100.0) == OK and hb.silence(100.0) == 0.0


def test_pong_is_a_strict_worker_request():
    assert channel.parse_worker_request(b'{"op":"pong"}', 0x20010000) == channel.Pong()
    with pytest.raises(channel.RequestError, match="unexpected keys"):
        channel.parse_worker_request(b'{"op":"pong","x":1}', 0x20010000)
    assert channel.parse_parent_message(channel.ping_message()) == ("ping", None)


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("2", 2), ("3600", 3600),
                                             ("off", 0), ("OFF", 0), ("0", 0)])
def test_worker_watchdog_directive(text, value):
    cfg = parse_config(f"RelayType cone\nWorkerWatchdog {text}\n", "r.conf")
    assert cfg.worker_watchdog == value


def test_worker_watchdog_default_and_every_role():
    assert parse_config("RelayType cone\n", "r.conf").worker_watchdog == 10
    cfg = parse_config("ServerBindAddress 192.0.2.1\nServerBindAddress2 192.0.2.2\n"
                       "WorkerWatchdog 5\n", "s.conf", resolver=lambda h: h)
    assert cfg.role == "server" and cfg.worker_watchdog == 5


@pytest.mark.parametrize("text", ["1", "3601", "-5", "5s", "on"])
def test_worker_watchdog_bad_values_are_file_line_errors(text):
    with pytest.raises(ConfigError) as e:
        parse_config(f"RelayType cone\n\nWorkerWatchdog {text}\n", "r.conf")
    assert str(e.value) == (
        f"r.conf:3: WorkerWatchdog: expected seconds from 2 to 3600, or off, got {text!r}")


def test_silence_counts_from_the_last_answered_ping_not_the_pong():
    hb = Heartbeat(watchdog=5)
    hb.arm(0.0)
    hb.ping(1.0)
    hb.beat(1.001)  # answered: the loop turned at 1.0 at the latest
    hb.ping(2.0)  # the worker froze just after 1.001: this one is never answered
    assert hb.check(3.999) == OK
    assert hb.check(4.0) == UNRESPONSIVE  # 3 s after the last proof of life, not 4
    assert hb.check(6.0) == KILL


def test_human_status_shows_an_unresponsive_worker():
    from engine.runtime import status_client

    st = {"interface": "h6", "role": "relay", "relay_type": "cone", "pid": 1,
          "worker": "unresponsive", "worker_pid": 5, "worker_silent": 3.9, "state": None}
    assert "  worker: unresponsive (no heartbeat for 3.9 s)" in status_client.format_status(
        st, now=100.0).splitlines()
    st["worker"] = "running"
    assert "worker:" not in status_client.format_status(st, now=100.0)
