"""Shared pytest configuration."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    """Kernel tests need root; skip them with a clear reason elsewhere (CI runs as root)."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel test: needs root")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """`make test` sets TEREDO_TESTS_NO_SKIP=1: there, a skipped test is a failure.

    The kernel ring skips itself without root, TUN or Debian's miredo, which is right for a
    developer's quick run but would let CI go green having run none of it.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("TEREDO_TESTS_NO_SKIP") == "1" and report.skipped and not hasattr(
        report, "wasxfail"
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but TEREDO_TESTS_NO_SKIP=1 requires it to run: {reason}"


@pytest.fixture(params=("compiled", "python"))
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both data paths: the compiled relay loop and the pure-Python reference.

    Sets ``TEREDO_FASTPATH`` for the test (engines started as subprocesses inherit it).  A
    missing compiled module skips the compiled case, which `make test`
    (``TEREDO_TESTS_NO_SKIP=1``) turns into a failure: CI must have built it.
    """
    from engine.runtime import fastpath

    if request.param == fastpath.COMPILED and not fastpath.available():
        pytest.skip(f"the compiled data path is not built: {fastpath.IMPORT_ERROR}")
    monkeypatch.setenv(fastpath.ENV, "1" if request.param == fastpath.COMPILED else "0")
    return request.param
