"""Who may run what: root runs everything; members of the `miredoctl` group read.

A fleet is changed only by root (engines need CAP_NET_ADMIN, `ip netns exec` CAP_SYS_ADMIN),
but looking at it should not need a root shell. Members of the group (MIREDOCTL_GROUP,
default `miredoctl`; created by the operator: `groupadd --system miredoctl`) run the read
commands; any other command from a non-root user stops at one line saying it needs root,
before anything is read. For them to read, the state folder is shared with the group when
the group exists (docs/miredoctl.md, "Non-root readers"):

- the state folder (and its lib folder) is 0750 and owned by the group, instead of 0700;
- the run folder is setgid to the group, so the engines' status sockets (0660) created
  there belong to the group and `status` can ask them;
- supervisord's socket is 0770 and owned by root and the group.

The group reaches supervisord's socket, which answers any XML-RPC call: membership is a
grant of trust (like the docker group), and the root check here keeps members from
changing the fleet by mistake, not by force.
"""

from __future__ import annotations

import contextlib
import grp
import os
from pathlib import Path

from miredoctl.errors import MiredoctlError

GROUP_ENV = "MIREDOCTL_GROUP"
DEFAULT_GROUP = "miredoctl"
# commands that only read: the fleet's state, its logs, what `up` would do
READ_COMMANDS = frozenset({"status", "show", "logs", "wait", "validate", "config", "diff",
                           "metrics", "completion", "ls"})


def group_name() -> str:
    return os.environ.get(GROUP_ENV) or DEFAULT_GROUP


def group_id() -> int | None:
    """The readers' group id, None when the group does not exist (then nothing is shared)."""
    try:
        return grp.getgrnam(group_name()).gr_gid
    except KeyError:
        return None


def state_dir_mode() -> int:
    return 0o750 if group_id() is not None else 0o700


def run_dir_mode() -> int:
    return 0o2755 if group_id() is not None else 0o755


def share(path: Path) -> None:
    """Give `path` to the readers' group (root only; a no-op without the group or when it
    already belongs to it, so a read-only state folder is not written to)."""
    gid = group_id()
    if gid is None or os.geteuid() != 0:
        return
    # best effort: a read-only state folder must not keep `down` from stopping an engine;
    # readers then get a one-line permission error until an `up` can share it
    with contextlib.suppress(OSError):
        if path.stat().st_gid != gid:
            os.chown(path, -1, gid)


def socket_owner() -> str | None:
    """`chown=` for supervisord's [unix_http_server]: root and the readers' group."""
    return f"root:{group_name()}" if group_id() is not None else None


def require_root(command: str) -> None:
    """One line, before anything is read, for a non-root user running a changing command."""
    if os.geteuid() == 0 or command in READ_COMMANDS:
        return
    raise MiredoctlError(f"`{command}` needs root; members of the {group_name()} group may "
                         f"run {', '.join(sorted(READ_COMMANDS - {'completion', 'ls'}))}")
