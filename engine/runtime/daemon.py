"""`run(config, opts)`: the engine's run path (docs/contracts.md §3), miredo's process model.

Checks that can fail cheaply come first and print one line (not root, no /dev/net/tun, unknown
user, bad chroot); then, without ``-f``, the double fork: the launching process waits on a
pipe for one status byte from the daemon and exits with it, so ``teredo-engine`` returns 1
when the daemon could not bind its port, exactly like miredo.  The daemon itself (or the
foreground process) becomes the privileged parent, `parent.Parent`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from engine.options import DEFAULT_USER, FALLBACK_USER
from engine.runtime.logsetup import detach_stderr, get_logger, setup_logging
from engine.runtime.parent import Parent, StartupError
from engine.runtime.privsep import (
    Account,
    PrivsepError,
    check_chroot_dir,
    fallback_warning,
    resolve_default_user,
    resolve_user,
)

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any

log = get_logger()


def preflight(config: Any, opts: Any) -> Account:
    """Fail early, with one line, on what would only fail later as root or after forking."""
    if os.geteuid() != 0:
        raise StartupError(f"root privileges are needed (running as uid {os.geteuid()})")
    if config.role != "server" and not os.path.exists("/dev/net/tun"):
        raise StartupError("/dev/net/tun is missing: the TUN driver is not available")
    if opts.user:
        account = resolve_user(opts.user)
    else:  # the fallback is logged once the start succeeded: a failing one stays one line
        account, _warning = resolve_default_user(DEFAULT_USER, FALLBACK_USER)
    if opts.chrootdir:
        check_chroot_dir(opts.chrootdir)
    return account


def _started(config: Any, opts: Any, account: Account,
             on_ready: Callable[[int], None] | None = None) -> Parent | None:
    """A started parent, or None (logged, cleaned up) when its start failed."""
    parent = Parent(config, opts, account)
    parent.on_ready = on_ready
    try:
        parent.start()
    except StartupError as e:
        log.error("%s", e)
        parent.exit_code = 1
        parent.cleanup()
        return None
    if not opts.user and account.name != DEFAULT_USER:
        log.warning("%s", fallback_warning(DEFAULT_USER, account.name))
    return parent


def run(config: Any, opts: Any) -> int:
    """Run one instance until a signal stops it; the exit code follows miredo (0 or 1)."""
    os.umask(0o022)
    setup_logging(getattr(config, "syslog_facility", None), foreground=True)
    for warning in getattr(config, "warnings", ()):  # e.g. superfluous directives
        log.warning("%s", warning)
    try:
        account = preflight(config, opts)
    except (StartupError, PrivsepError) as e:
        log.error("%s", e)
        return 1
    if not opts.foreground:
        return _daemonize(config, opts, account)
    parent = _started(config, opts, account)
    return 1 if parent is None else parent.run()


def _daemonize(config: Any, opts: Any, account: Account) -> int:
    """Double fork; the launcher returns the daemon's one-byte status (0 ok, 1 failed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        try:
            data = os.read(r, 1)
        finally:
            os.close(r)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        return data[0] if data else 1
    # first child: new session, then fork again so the daemon can never regain a terminal
    os.close(r)
    code = 1
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        os.chdir("/")
        code = _daemon_main(config, opts, account, w)
    except BaseException as e:
        with contextlib.suppress(Exception):
            log.error("daemon failed: %s", e)
    finally:
        os._exit(code)


def _daemon_main(config: Any, opts: Any, account: Account, status_fd: int) -> int:
    reported = False

    def report(code: int) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        with contextlib.suppress(OSError):
            os.write(status_fd, bytes([code]))
            os.close(status_fd)
        if code == 0:
            _detach_stdio()

    parent = _started(config, opts, account, on_ready=report)
    if parent is None:
        report(1)
        return 1
    code = parent.run()
    report(code)
    return code


def _detach_stdio() -> None:
    """stdio to /dev/null once the launcher has its answer (miredo does the same)."""
    detach_stderr()
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
