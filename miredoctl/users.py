"""`user: auto`: each instance's worker runs as a system user of its own, `teredo-<name>`.

Why: an engine's worker drops root to one unprivileged account, and processes of one uid may
signal (and ptrace, and read the /proc files of) each other.  Workers that share `nobody`, or
one `teredo` user, are one compromised worker away from all being killed or inspected;
workers under distinct uids cannot touch each other (issue 9, least privilege;
docs/security.md).  An operator can name a user per instance (`user: NAME`, which must
exist), or write `user: auto` (best in `defaults.yaml` `all:`) and let `miredoctl up` create
`teredo-<name>` when it is missing:

    useradd --system --user-group --no-create-home --home-dir /nonexistent
            --shell /usr/sbin/nologin --comment "teredo-fleet worker of NAME" teredo-NAME

An account is never removed automatically: it may own files (a chroot's logs, say), a uid
reused by an unrelated account later would inherit them, and removing it is one `userdel`
for the operator who retires the instance.
"""

from __future__ import annotations

import hashlib
import pwd
import shutil
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING

from miredoctl.errors import MiredoctlError
from miredoctl.inventory import AUTO_USER as AUTO

if TYPE_CHECKING:  # render imports this module: it must not pull in supervisor's modules
    from miredoctl.inventory import Fleet, Instance
    from miredoctl.supervisord import ApplyResult
PREFIX = "teredo-"
MAX_NAME = 32
"""useradd's longest user name on Debian (and what `ps` and `ls -l` show whole)."""


def auto_user_name(instance: str) -> str:
    """`teredo-<instance>`; a name too long for useradd keeps its first 16 characters and adds
    8 hex digits of a hash of the whole name, so two long names never share an account."""
    name = PREFIX + instance
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(instance.encode()).hexdigest()[:8]
    return f"{PREFIX}{instance[:MAX_NAME - len(PREFIX) - 9]}-{digest}"


def worker_user(inst: Instance) -> str | None:
    """What `-u` gets for this instance: None (the engine's own default), the `user:` value,
    or the per-instance account of `user: auto`."""
    value = inst.get("user")
    if value == AUTO:
        return auto_user_name(inst.name)
    return value


def ensure_users(fleet: Fleet, names: Iterable[str]) -> list[ApplyResult]:
    """Create the missing accounts of the `user: auto` instances among `names` (as root, before
    anything starts); one result per account created.  Raises `MiredoctlError` when useradd
    fails: starting the engine would fail on the unknown user anyway."""
    from miredoctl.supervisord import ApplyResult

    created: list[ApplyResult] = []
    for name in names:
        inst = fleet.instances[name]
        if inst.get("user") != AUTO:
            continue
        user = auto_user_name(name)
        try:
            pwd.getpwnam(user)
            continue
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        argv = [useradd, "--system", "--user-group", "--no-create-home",
                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                "--comment", f"teredo-fleet worker of {name}", user]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MiredoctlError(f"{name}: cannot create user {user} (user: auto): {exc}")
        if cp.returncode != 0:
            why = (cp.stderr or cp.stdout).strip().splitlines()
            raise MiredoctlError(f"{name}: useradd {user} failed (user: auto): "
                                 f"{why[-1] if why else f'exit status {cp.returncode}'}")
        uid = pwd.getpwnam(user).pw_uid
        created.append(ApplyResult(name, "user created", True, f"{user} (uid {uid})"))
    return created
