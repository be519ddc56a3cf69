"""Run a test on both data paths: the compiled relay loop and the pure-Python reference.

The fixture sets ``TEREDO_FASTPATH`` for the test (engines started as subprocesses inherit
it).  A missing compiled module skips the compiled case, which `make test`
(``TEREDO_TESTS_NO_SKIP=1``) turns into a failure: CI must have built it.
"""

from __future__ import annotations

import pytest

from engine.runtime import fastpath

DATA_PATHS = (fastpath.COMPILED, fastpath.PYTHON)


@pytest.fixture(params=DATA_PATHS)
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == fastpath.COMPILED and not fastpath.available():
        pytest.skip(f"the compiled data path is not built: {fastpath.IMPORT_ERROR}")
    monkeypatch.setenv(fastpath.ENV, "1" if request.param == fastpath.COMPILED else "0")
    return request.param
