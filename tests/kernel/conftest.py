"""Fixtures for kernel tests: labs with a unique namespace prefix, always torn down.

Several engineers run kernel tests at once on one machine, so every lab gets a fresh random
prefix, and a prefix is never reused while any namespace with it exists (up() removes an
older lab with the same prefix, which must never be someone else's).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from teredolab import netns
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel.harness import debian_miredo_missing

LabFactory = Callable[..., NetnsLab]


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "kernel test: needs root (network namespaces, nftables, TUN)"
    for tool in ("ip", "nft", "ping", "ss", "sysctl"):
        if shutil.which(tool) is None:
            return f"kernel test: `{tool}` is not installed"
    return None


def unique_prefix() -> str:
    """`k` + 4 hex digits + `-`, not used by any existing namespace."""
    existing = netns.list_namespaces()
    for _ in range(100):
        prefix = f"k{secrets.token_hex(2)}-"
        if not any(n.startswith(prefix) for n in existing):
            return prefix
    raise RuntimeError("no free lab prefix after 100 tries (stale namespaces in /run/netns?)")


def module_lab() -> Iterator[NetnsLab]:
    """The default lab under a fresh prefix, for a module-scoped fixture to `yield from`: one
    lab per test module, torn down also when its build or a test fails."""
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab(LabSpec(prefix=unique_prefix()))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """`lab_factory(**LabSpec fields, check=True)` builds a lab; all are removed at teardown,
    also when the test (or the build itself) fails."""
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    labs: list[NetnsLab] = []

    def make(check: bool = True, **spec_fields: Any) -> NetnsLab:
        spec_fields.setdefault("prefix", unique_prefix())
        lab = NetnsLab(LabSpec(**spec_fields))
        labs.append(lab)  # before up(): teardown covers a half-built lab too
        lab.up(check=check)
        return lab

    def teardown() -> None:
        errors = []
        for lab in reversed(labs):
            try:
                lab.down()
            except Exception as e:  # keep removing the others
                errors.append(str(e))
        if errors:
            raise RuntimeError("lab teardown: " + "; ".join(errors))

    request.addfinalizer(teardown)
    yield make


@pytest.fixture
def lab(lab_factory: LabFactory) -> NetnsLab:
    """The default lab (reference address plan, two restricted NATs)."""
    return lab_factory()


@pytest.fixture
def debian_miredo() -> None:
    """Skip unless Debian's miredo and miredo-server can run."""
    reason = _missing_tools() or debian_miredo_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Configs, pid files and logs of one test's daemons."""
    d = tmp_path / "run"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- interop matrix
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the interop matrix (tests/kernel/matrix.py) once, at the very end of the run,
    so every combination is read in one table whatever order the tests ran in."""
    from tests.kernel import matrix

    text = matrix.summary_text()
    if text:
        terminalreporter.write_sep("=", "Teredo interop matrix and timings (tests/kernel)")
        terminalreporter.write_line(text)
