"""The `teredo-engine` command and ``python -m engine``: the cyclic collector off first.

A client's start is timed to its address, and its set-up makes long-lived objects and
almost no cyclic garbage: the collections its imports triggered, with the full one its fork
needed, were 3-5 ms of the way to its first Router Solicitation (docs/performance.md, "The
night pass").  So the collector is off from before the first import.  `Parent.start` turns
it back on at once for every other role (a relay's set-up does make cyclic garbage), the
parent and the worker turn it on right after the fork, and whatever exits before a fork
exits with it off.  Code that calls `engine.cli.main` itself (tests, embedding programs)
keeps its own setting.
"""

from __future__ import annotations

import gc


def main() -> int:
    """Entry point of `teredo-engine` and ``python -m engine``; returns the exit code."""
    gc.disable()
    from engine.cli import main as cli_main

    return cli_main()
