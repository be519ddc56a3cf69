"""The committed man pages are what the parsers generate: a changed option without
`python man/generate.py` fails here (and so in CI)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from engine import cli as engine_cli
from miredoctl import cli

# a development tool beside the pages it writes, outside both packages (docs/architecture.md)
_SPEC = importlib.util.spec_from_file_location(
    "man_generate", Path(__file__).resolve().parents[2] / "man" / "generate.py")
assert _SPEC and _SPEC.loader
manpages = importlib.util.module_from_spec(_SPEC)
sys.modules["man_generate"] = manpages  # dataclasses look their module up there
_SPEC.loader.exec_module(manpages)


def test_committed_pages_match_the_parsers() -> None:
    for page in manpages.pages():
        assert page.path.read_text() == page.text, \
            f"{page.path} is stale: run python man/generate.py"
    assert manpages.main(["--check"]) == 0


def test_every_command_and_option_is_in_miredoctl_1() -> None:
    text = manpages.miredoctl_page().text
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        assert f".SS {manpages._esc(name)}\n" in text
        for action in cmd._actions:
            for flag in action.option_strings:
                assert manpages._esc(flag) in text, (name, flag)


def test_every_engine_option_has_its_help_line() -> None:
    texts = manpages._engine_help_texts(engine_cli.HELP)
    for action in engine_cli._parser()._actions:
        for flag in action.option_strings:
            assert texts.get(flag), flag  # a new flag needs its line in engine/cli.py HELP
    assert texts["-u"].startswith("drop privileges to USER") and "with a warning" in texts["-u"]
    page = manpages.engine_page().text
    assert ".TH TEREDO-ENGINE 8 " in page and "\\fB\\-\\-check\\fR" in page
