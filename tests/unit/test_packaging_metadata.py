"""pyproject.toml's metadata: an SPDX license expression (PEP 639) that matches the LICENSE
file it ships, and a build backend new enough to read it (setuptools 77)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_backed_by_the_shipped_file() -> None:
    data = _project()
    assert data["project"]["license"] == "MIT"
    assert data["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    # PEP 639: with an SPDX expression no license classifier may be given
    assert not any(c.startswith("License ::") for c in data["project"]["classifiers"])


def test_build_backend_reads_pep_639() -> None:
    """77 reads PEP 639's SPDX license; below 81, editable_mode=compat (the Makefile's plain
    .pth install) is still there."""
    (req,) = _project()["build-system"]["requires"]
    match = re.fullmatch(r"setuptools>=(\d+),<(\d+)", req)
    assert match and int(match.group(1)) >= 77 and int(match.group(2)) <= 81


def test_urls_and_classifiers_are_there() -> None:
    project = _project()["project"]
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
