"""`make test` must not go green on skipped tests (see tests/conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, no_skip: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\ndef test_needs_miredo():\n    pytest.skip('miredo not installed')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TEREDO_TESTS_NO_SKIP", None)
    if no_skip:
        env["TEREDO_TESTS_NO_SKIP"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--tb=long", "-p", "no:cacheprovider",
         "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def test_skip_is_a_failure_under_make_test(tmp_path):
    proc = _run(tmp_path, no_skip=True)
    assert proc.returncode == 1, proc.stdout
    assert "requires it to run: Skipped: miredo not installed" in proc.stdout


def test_skip_stays_a_skip_otherwise(tmp_path):
    proc = _run(tmp_path, no_skip=False)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout
