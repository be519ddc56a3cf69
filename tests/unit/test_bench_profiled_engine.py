"""The benchmark's cProfile launcher: the worker's loop is profiled from outside the engine."""

from __future__ import annotations

import os
import pstats
from pathlib import Path

import pytest

from bench.profiled_engine import main, profile_worker_loop
from engine.runtime.worker import Worker


def busy_loop(self: object) -> None:
    sum(range(1000))


def test_the_worker_loop_writes_pstats_readable_stats(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Worker, "run", busy_loop)
    out = tmp_path / "worker.pstats"
    out.write_bytes(b"x" * 100_000)  # a longer, older profile is replaced, not overwritten
    fd = os.open(out, os.O_WRONLY)
    try:
        profile_worker_loop(fd)
        Worker.run(object())  # type: ignore[arg-type]
    finally:
        os.close(fd)
    names = {func[2] for func in pstats.Stats(str(out)).stats}  # type: ignore[attr-defined]
    assert "busy_loop" in names


def test_usage_needs_the_output_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
