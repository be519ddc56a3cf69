"""Orphans, as docker compose names them: instances the fleet's supervisord runs that the
inventory no longer has (their file was deleted, or the fleet folder switched to a branch
without it).

A whole-fleet `up` lists them and leaves them running, because a deleted file is as often a
mistake or an unfinished checkout as a decision; `up --remove-orphans` and `down
--remove-orphans` stop and remove them (docs/miredoctl.md, "Orphans"). An instance still in
the inventory with `enabled: false` is not an orphan: the inventory says to stop it, so a
whole-fleet `up` removes it as it always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from miredoctl.inventory import Fleet
from miredoctl.state import StatePaths
from miredoctl.supervisord import ApplyResult

KEPT = "orphan kept"  # the ApplyResult action for an orphan `up` leaves running


def orphans(fleet: Fleet, supervised: Iterable[str]) -> list[str]:
    """The supervised instance names the inventory does not have (helpers, `_...`, excluded)."""
    return sorted(n for n in supervised if n not in fleet.instances and not n.startswith("_"))


def split_gone(fleet: Fleet, gone: list[str], remove_orphans: bool) -> tuple[list[str], list[str]]:
    """Of the supervised instances a whole-fleet `up` does not render (`gone`): those it
    removes (disabled ones, and orphans with --remove-orphans) and the orphans it keeps."""
    found = set(orphans(fleet, gone))
    remove = [n for n in gone if n not in found or remove_orphans]
    keep = [n for n in gone if n in found and not remove_orphans]
    return remove, keep


def kept_results(keep: list[str], procs: dict[str, dict]) -> list[ApplyResult]:
    return [ApplyResult(name, KEPT, True,
                        f"{procs.get(name, {}).get('statename', '?').lower()}, not in the "
                        "inventory: left as it is (`miredoctl up --remove-orphans` stops and "
                        "removes it)") for name in keep]


def warning(results: list[ApplyResult]) -> str | None:
    """The one stderr line `up` prints when it left orphans running."""
    kept = [r.name for r in results if r.action == KEPT]
    if not kept:
        return None
    return (f"miredoctl: warning: {len(kept)} orphan(s) run but are not in the inventory: "
            f"{', '.join(kept)} (left running; `--remove-orphans` stops and removes them)")


def forget_files(paths: StatePaths, names: Iterable[str]) -> None:
    """An orphan that `down --remove-orphans` stopped: its program section and config go, so
    no later supervisord start brings it back (best effort: a read-only state folder must not
    keep an operator from stopping it)."""
    for name in names:
        for path in (paths.program(name), paths.config(name)):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
