"""How one engine process was asked to run: the command line, apart from the config file.

Kept apart from `EngineConfig` because these are per-process choices (pid file, user, chroot)
that miredo also takes from the command line only, and a SIGHUP reload must not change them.
"""

from __future__ import annotations

import os

from engine.proto.records import dataclass

DEFAULT_CONFIG = "/etc/miredo/miredo.conf"
DEFAULT_PIDFILE = "/run/teredo-engine.pid"
DEFAULT_USER = "teredo"
"""The worker's account when `-u` is not given: a system user of the engine's own, so that its
workers share no uid with other daemons (issue 9, least privilege; docs/security.md)."""
FALLBACK_USER = "nobody"
"""Used, with a warning, when `DEFAULT_USER` does not exist on the host."""
STATUS_DIR = "/run/teredo-engine"


@dataclass
class RunOptions:
    config_path: str = DEFAULT_CONFIG
    foreground: bool = False
    pidfile: str = DEFAULT_PIDFILE
    user: str | None = None
    """`-u USER`; None: `DEFAULT_USER` if it exists, else `FALLBACK_USER` with a warning."""
    chrootdir: str | None = None
    status_socket: str | None = None
    """The CLI fills this with the final path (see `status_socket_path`) before running."""
    server_name: str | None = None


def status_socket_path(
    cli_path: str | None, directive: str | None, pidfile: str | None, role: str
) -> str:
    """The status socket of an instance, by the rule of docs/contracts.md §4.

    `--status-socket` wins, then the `StatusSocket` directive, then a name derived from the
    pid file given with `-p` (so several instances on one host get distinct sockets), then
    the role. `pidfile` is None when `-p` was not given.
    """
    if cli_path:
        return cli_path
    if directive:
        return directive
    if pidfile:
        base = os.path.basename(pidfile)
        if base.endswith(".pid"):
            base = base[: -len(".pid")]
        if base:
            return os.path.join(STATUS_DIR, base + ".sock")
    return os.path.join(STATUS_DIR, role + ".sock")
