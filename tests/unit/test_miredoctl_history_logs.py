"""Restart history / flapping, and the timestamped logs merged across instances."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from miredoctl import logs
from miredoctl.errors import UsageError
from miredoctl.listeners import history, logstamp
from miredoctl.listeners.history import Transition, summarize
from miredoctl.listeners.timedlog import (
    TimedWriter,
    format_line,
    merge,
    parse_line,
    parse_since,
    read_instance,
)
from miredoctl.state import StatePaths

T0 = 1_764_130_000.0  # a fixed Unix time: no test reads the clock


def tr(t: float, state: str, frm: str) -> Transition:
    return Transition(T0 + t, state, frm)


def test_restarts_count_automatic_restarts_since_the_operator_start() -> None:
    seq = [tr(0, "STARTING", "STOPPED"), tr(2, "RUNNING", "STARTING"),
           tr(50, "EXITED", "RUNNING"), tr(50, "STARTING", "EXITED"),
           tr(52, "RUNNING", "STARTING")]
    s = summarize(seq, T0 + 60)
    assert (s.restarts, s.recent_restarts, s.flapping) == (1, 1, False)
    assert s.last_exit == T0 + 50 and s.last_change == T0 + 52
    # BACKOFF retries are restarts too; three within the window is flapping
    seq += [tr(60, "EXITED", "RUNNING"), tr(60, "STARTING", "EXITED"),
            tr(61, "BACKOFF", "STARTING"), tr(62, "STARTING", "BACKOFF")]
    s = summarize(seq, T0 + 63)
    assert (s.restarts, s.flapping) == (3, True)
    # ... but not once they are older than the window
    s = summarize(seq, T0 + 62 + history.FLAP_WINDOW + 50)
    assert (s.restarts, s.recent_restarts, s.flapping) == (3, 0, False)
    # an operator start (STOPPED -> STARTING) resets the count
    seq += [tr(70, "STOPPING", "RUNNING"), tr(71, "STOPPED", "STOPPING"),
            tr(72, "STARTING", "STOPPED")]
    assert summarize(seq, T0 + 73).restarts == 0
    # start retries that end FATAL count; starting it again by hand (from FATAL) resets
    seq += [tr(74, "BACKOFF", "STARTING"), tr(75, "STARTING", "BACKOFF"),
            tr(76, "BACKOFF", "STARTING"), tr(77, "FATAL", "BACKOFF")]
    assert summarize(seq, T0 + 78).restarts == 1
    seq += [tr(80, "STARTING", "FATAL")]
    assert summarize(seq, T0 + 81).restarts == 0


def test_history_file_round_trip_skips_torn_lines_and_trims(tmp_path: Path,
                                                             monkeypatch) -> None:
    path = tmp_path / "history" / "relay.jsonl"
    ev = history.transition_from_event(
        "PROCESS_STATE_EXITED", {"processname": "relay", "from_state": "RUNNING",
                                 "expected": "0", "pid": "4242"}, T0)
    assert ev == Transition(T0, "EXITED", "RUNNING", 4242, False)
    assert history.transition_from_event("TICK_5", {}, T0) is None
    history.record(path, ev)
    with path.open("a") as fh:
        fh.write('{"t": 1, "sta')  # a writer caught mid-line
    assert history.load(path) == [ev]
    assert history.load(tmp_path / "missing.jsonl") == []
    monkeypatch.setattr(history, "KEEP", 5)
    path.write_text("")
    for i in range(11):
        history.record(path, Transition(T0 + i, "RUNNING", "STARTING", i))
    kept = history.load(path)
    assert [t.pid for t in kept] == [6, 7, 8, 9, 10]


def test_timed_lines_round_trip_and_bad_stamps_keep_their_text() -> None:
    line = format_line(T0 + 0.25, "client1 qualified")
    assert line == "2025-11-26T04:06:40.250000Z client1 qualified\n"
    assert parse_line(line) == (T0 + 0.25, "client1 qualified")
    assert parse_line("no stamp here\n") == (None, "no stamp here")
    assert parse_line("2025-13-01T00:00:00.000000Z x") == (None, "2025-13-01T00:00:00.000000Z x")


def test_writer_keeps_partial_lines_until_complete_and_flushes_on_exit(tmp_path: Path) -> None:
    w = TimedWriter(tmp_path)
    w.feed("relay", "one\ntw", T0)
    w.feed("relay", "o\nthree", T0 + 1)
    assert w.path("relay").read_text() == format_line(T0, "one") + format_line(T0, "two")
    w.flush("relay")
    assert w.path("relay").read_text().endswith(format_line(T0 + 1, "three"))
    w.flush("relay")  # nothing pending: nothing written
    assert len(w.path("relay").read_text().splitlines()) == 3


def test_writer_rotates(tmp_path: Path) -> None:
    w = TimedWriter(tmp_path, max_bytes=100, backups=2)
    for i in range(12):
        w.feed("c", f"line {i:02d} " + "x" * 20 + "\n", T0 + i)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    lines = read_instance(tmp_path / "c.log", tmp_path / "raw.log", "c")
    texts = [ln.text[:7] for ln in lines]
    assert texts == sorted(texts) and texts[-1] == "line 11"  # oldest first, newest kept


def _fleet_logs(tmp_path: Path) -> StatePaths:
    paths = StatePaths(tmp_path)
    paths.ensure()
    w = TimedWriter(paths.timed_logs)
    w.feed("relay", "r1\n", T0 + 1)
    w.feed("client1", "c1\n", T0 + 2)
    w.feed("relay", "r2\nr3\n", T0 + 3)
    w.feed("client1", "c2\n", T0 + 4)
    return paths


def test_logs_interleave_by_time_and_cut_n_and_since_across_the_merge(tmp_path: Path) -> None:
    paths = _fleet_logs(tmp_path)
    got = logs.collect(paths, ["client1", "relay"])
    assert [(ln.name, ln.text) for ln in got] == [
        ("relay", "r1"), ("client1", "c1"), ("relay", "r2"), ("relay", "r3"), ("client1", "c2")]
    assert [ln.text for ln in logs.collect(paths, ["client1", "relay"], last=2)] == ["r3", "c2"]
    assert [ln.text for ln in logs.collect(paths, ["client1", "relay"], since=T0 + 3)] == [
        "r2", "r3", "c2"]
    out = io.StringIO()
    logs.show(paths, ["client1", "relay"], 3, False, out)
    rows = out.getvalue().splitlines()
    assert [r.split(" | ")[0].strip() for r in rows] == ["relay", "relay", "client1"]
    assert [r.rsplit(" ", 1)[-1] for r in rows] == ["r2", "r3", "c2"]


def test_logs_fall_back_to_the_raw_log_without_times(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    paths.ensure()
    paths.log("old").write_text("before stamping\n")
    got = merge([read_instance(paths.timed_log("old"), paths.log("old"), "old")])
    assert [(ln.time, ln.text) for ln in got] == [(None, "before stamping")]
    assert merge([got], since=T0) == []  # a line with no time is never "since" anything


def test_logstamp_listener_handles_supervisord_events(tmp_path: Path) -> None:
    w = TimedWriter(tmp_path)
    payload = "processname:relay groupname:relay pid:7 channel:stdout\nhello\nwor"
    logstamp.handle(w, "PROCESS_LOG_STDOUT", payload, T0)
    logstamp.handle(w, "PROCESS_LOG_STDOUT",
                    "processname:_reaper groupname:_reaper pid:8 channel:stdout\nx\n", T0)
    assert w.path("relay").read_text() == format_line(T0, "hello")
    assert not w.path("_reaper").exists()
    logstamp.handle(w, "PROCESS_STATE_EXITED",
                    "processname:relay groupname:relay from_state:RUNNING expected:0 pid:7", T0)
    assert w.path("relay").read_text().endswith(format_line(T0, "wor"))


@pytest.mark.parametrize("text,expected", [
    ("30s", T0 - 30), ("10m", T0 - 600), ("2h", T0 - 7200), ("1d", T0 - 86400),
    ("2025-11-26T04:06:40Z", T0), ("2025-11-26T04:06:40+00:00", T0),
])
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, T0) == expected


def test_parse_since_local_forms_and_errors() -> None:
    # local wall-clock forms: the same instant whichever way it is written
    from datetime import datetime

    local = datetime.fromtimestamp(T0)
    assert parse_since(local.strftime("%Y-%m-%d %H:%M:%S"), T0) == T0
    assert parse_since(local.strftime("%H:%M:%S"), T0) == T0
    with pytest.raises(UsageError, match="--since 'yesterday-ish'"):
        parse_since("yesterday-ish", T0)
