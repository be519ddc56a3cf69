"""Dropping root in the worker: chroot, no supplementary groups, setgid, setuid, no caps.

Order matters: chroot needs CAP_SYS_CHROOT, so it comes before setuid; /proc is usually absent
inside the chroot, so /proc/self/status is opened *before* chroot and read afterwards to prove
that the effective capability set is empty (setuid from root to a non-root uid clears it unless
SECBIT_KEEP_CAPS is set, and we check rather than trust that).  PR_SET_NO_NEW_PRIVS closes the
setuid-binary door for good.
"""

from __future__ import annotations

import os
import pwd

from engine.proto.records import dataclass
from engine.runtime import privcalls  # at import time: the worker cannot import after its chroot


class PrivsepError(Exception):
    """A privilege problem; ``str()`` is the one line for the user."""


@dataclass(frozen=True, slots=True)
class Account:
    """The unprivileged account the worker runs as."""

    name: str
    uid: int
    gid: int


def resolve_user(name: str) -> Account:
    """Look up `-u USER` (a name or a numeric uid); root is refused like miredo does."""
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise PrivsepError(f"unknown user {name!r} (-u)")
    if pw.pw_uid == 0:
        raise PrivsepError(f"user {name!r} has uid 0; the worker must not run as root (-u)")
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid)


def resolve_default_user(preferred: str, fallback: str) -> tuple[Account, str | None]:
    """The account when `-u` was not given: `preferred` (a system user of the engine's own)
    when the host has it, else `fallback` and the warning to log.  Only a missing account
    falls back; a `preferred` that is root is refused, as with `-u`."""
    try:
        return resolve_user(preferred), None
    except PrivsepError:
        try:
            pwd.getpwnam(preferred)
        except KeyError:
            pass
        else:
            raise
    return resolve_user(fallback), fallback_warning(preferred, fallback)


def fallback_warning(preferred: str, fallback: str) -> str:
    """What an engine running as `fallback` instead of `preferred` logs once it has started."""
    return (f"user {preferred!r} does not exist: the worker runs as {fallback!r}, which other "
            f"daemons and every other engine on this host share, so they can signal it; "
            f"create it (useradd --system --no-create-home --shell /usr/sbin/nologin "
            f"{preferred}) or give each instance its own with -u")


def check_chroot_dir(path: str) -> None:
    """Fail early (before any fork) on a bad `-t DIR`."""
    if not os.path.isdir(path):
        raise PrivsepError(f"chroot directory {path} does not exist or is not a directory (-t)")


def cap_eff(status_text: str) -> int:
    """The CapEff mask from the text of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise PrivsepError("CapEff line missing from /proc status")


def status_field(status_text: str, name: str) -> list[str]:
    """The whitespace-separated values of one /proc/PID/status line (e.g. ``Uid``)."""
    for line in status_text.splitlines():
        if line.startswith(name + ":"):
            return line.split()[1:]
    raise PrivsepError(f"{name} line missing from /proc status")


def _no_new_privs() -> None:
    try:
        privcalls.prctl(privcalls.PR_SET_NO_NEW_PRIVS, 1)
    except OSError:  # a kernel before 3.5: the setuid-binary door stays as setuid left it
        pass


def drop_privileges(account: Account, chroot_dir: str | None) -> None:
    """Become `account` for good (real, effective and saved ids) and verify CapEff == 0."""
    status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if chroot_dir:
            os.chroot(chroot_dir)
            os.chdir("/")
        os.setgroups([])
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
        _no_new_privs()
        text = os.pread(status_fd, 65536, 0).decode("ascii", "replace")
    finally:
        os.close(status_fd)
    if os.getuid() != account.uid or os.geteuid() != account.uid:
        raise PrivsepError(f"setuid({account.uid}) did not take effect")
    caps = cap_eff(text)
    if caps != 0:
        raise PrivsepError(f"capabilities left after dropping root: CapEff={caps:016x}")
