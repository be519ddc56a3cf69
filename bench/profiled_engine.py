"""`python -m bench.profiled_engine OUT ARGS...`: teredo-engine, its worker under cProfile.

``python -m cProfile -m engine`` only sees the privileged parent: the packet path runs in a
forked, unprivileged (maybe chrooted) worker that ends with ``os._exit``, so no profiler of the
launching process ever writes its stats.  This launcher wraps the worker's loop
(`Worker.run`) in a profiler instead, then runs the engine's own entry point with the
remaining arguments, so the engine itself carries no profiling code.

`OUT` is opened here, as root and before any fork, because the worker cannot open files after
it dropped privileges; each worker that finishes its loop rewrites it with its stats, so after
a restart it holds the last worker's.  Read it with ``python -m pstats OUT``.  py-spy
(``python -m bench --profile``) samples instead and costs the worker almost nothing; this is
for exact call counts.
"""

from __future__ import annotations

import cProfile  # imported while still root: nobody may not be able to read the stdlib
import marshal
import os
import sys

from engine.cli import main as engine_main
from engine.runtime.worker import Worker


def profile_worker_loop(out_fd: int) -> None:
    """Make every worker run its loop under cProfile and write the stats to `out_fd`."""
    run = Worker.run

    def profiled_run(self: Worker) -> None:
        prof = cProfile.Profile()
        try:
            prof.runcall(run, self)
        finally:
            prof.create_stats()
            data = marshal.dumps(prof.stats)  # what pstats.Stats(path) loads
            os.ftruncate(out_fd, 0)
            os.pwrite(out_fd, data, 0)

    Worker.run = profiled_run  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m bench.profiled_engine OUT [teredo-engine arguments]",
              file=sys.stderr)
        return 2
    out, engine_args = argv[0], argv[1:]
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        print(f"{out}: {e.strerror}", file=sys.stderr)
        return 1
    profile_worker_loop(fd)
    return engine_main(engine_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
