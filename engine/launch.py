"""The `teredo-engine` command and ``python -m engine``: the cyclic collector off first.

`engine.cli.main` keeps the collector off until the worker is forked (the parent and the
worker turn it back on right after the fork), but by the time it runs, importing `engine.cli`
itself (the config package, `typing`, `re`, `socket`: about a third of the run path's
imports) has already triggered collections.  Set-up makes long-lived objects and almost no
cyclic garbage, so this entry point turns the collector off before that first import
(docs/performance.md, "The night pass").  Code that calls `engine.cli.main` itself (tests,
embedding programs) keeps its own setting.
"""

from __future__ import annotations

import gc


def main() -> int:
    """Entry point of `teredo-engine` and ``python -m engine``; returns the exit code."""
    gc.disable()
    from engine.cli import main as cli_main

    return cli_main()
