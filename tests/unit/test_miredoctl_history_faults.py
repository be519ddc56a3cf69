"""Issue 10, item 7: a broken history file never breaks a read command or the listener.

A `-inf` time, a line of a few thousand nested brackets, a directory or a FIFO in place of the
file, a torn last line: each costs at most its own record, never a crash, a hang or the next
record.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from miredoctl import cli
from miredoctl.listeners import history

GOOD = ('{"t":1764130000.0,"state":"STARTING","from":"EXITED","pid":null,"expected":null}\n'
        '{"t":1764130001.0,"state":"EXITED","from":"RUNNING","pid":42,"expected":false}\n')


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise AssertionError("blocked for 5 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("bad", [
    '{"t":-Infinity,"state":"STARTING","from":"EXITED"}',
    '{"t":"-inf","state":"STARTING","from":"EXITED"}',
    '{"t":NaN,"state":"EXITED","from":"RUNNING"}',
    '{"t":1e999,"state":"EXITED","from":"RUNNING"}',
    '{"t":-5,"state":"EXITED","from":"RUNNING"}',
    '{"t":' + "[" * 100000 + "]" * 100000 + "}",
    "[" * 5000,
    '{"t":1,"state":"EXITED","from":"RUNNING","pid":{"a":[1]},"expected":"yes"}x',
    "\x00\xff garbage",
])
def test_bad_lines_cost_only_themselves(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "c1.jsonl"
    path.write_text(bad + "\n" + GOOD)
    got = history.load(path)
    assert [(t.time, t.state) for t in got] == [(1764130000.0, "STARTING"),
                                                (1764130001.0, "EXITED")]
    summary = history.summarize(got, 1764130100.0)
    assert summary.restarts == 1 and summary.last_exit == 1764130001.0


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    path.write_text(GOOD + '{"t":1764130002.0,"state":"STAR')  # the writer died mid-line
    history.record(path, history.Transition(1764130003.0, "EXITED", "RUNNING", 43, False))
    got = history.load(path)
    assert [t.time for t in got] == [1764130000.0, 1764130001.0, 1764130003.0]
    assert path.read_text().endswith('"STAR\n{"t":1764130003.0,"state":"EXITED","from":'
                                     '"RUNNING","pid":43,"expected":false}\n')


def test_a_record_glued_to_a_torn_one_is_still_read(tmp_path: Path) -> None:
    """Files written before `record` ended torn lines hold both on one line."""
    path = tmp_path / "c1.jsonl"
    path.write_text(GOOD + '{"t":1764130002.0,"state":"STAR{"t":1764130003.0,"state":"EXITED",'
                           '"from":"RUNNING","pid":43,"expected":false}\n')
    assert [t.time for t in history.load(path)][-1] == 1764130003.0


def test_a_directory_or_fifo_in_place_of_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "c1.jsonl"
    folder.mkdir()
    assert history.load(folder) == []
    fifo = tmp_path / "c2.jsonl"
    os.mkfifo(fifo)
    assert history.load(fifo) == []  # no writer: a plain open() would block here
    tr = history.Transition(1.0, "EXITED", "RUNNING")
    for path in (folder, fifo):  # the listener reports it (OSError) instead of blocking
        with pytest.raises(OSError):
            history.record(path, tr)


def test_a_huge_file_is_read_from_its_end_only(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    with path.open("w") as fh:
        fh.write(("x" * 1000 + "\n") * 3000)  # 3 MB of garbage, then the records
        fh.write(GOOD)
    assert [t.time for t in history.load(path)] == [1764130000.0, 1764130001.0]


def test_show_and_status_survive_every_broken_history(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name in ("c1", "c2", "c3", "c4"):
        (fleet / f"{name}.yaml").write_text(f"role: client\nserver: 203.0.113.10\n"
                                            f"interface: t-{name}\n")
    state = tmp_path / "state"
    hist = state / "history"
    hist.mkdir(parents=True)
    (hist / "c1.jsonl").write_text('{"t":-Infinity,"state":"EXITED","from":"RUNNING"}\n')
    (hist / "c2.jsonl").write_text('{"t":' + "[" * 50000 + "\n")
    (hist / "c3.jsonl").mkdir()
    os.mkfifo(hist / "c4.jsonl")
    for command in ("show", "status"):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = cli.main(["--fleet", str(fleet), "--state-dir", str(state), command])
        assert code == 4  # no supervisord in this test: every row is shown, then exit 4
        assert "internal error" not in err.getvalue(), err.getvalue()
