"""Logging: syslog with miredo's facilities, plus stderr in the foreground.

The ident is ``teredo-engine`` with the pid, like miredo's ``LOG_PID``; under miredoctl, which
starts every engine with MIREDOCTL_INSTANCE set to the instance's name, it is
``teredo-engine/<instance>``, so the lines of a fleet's engines in one syslog say whose they
are.  In the foreground the same lines also go to stderr (miredo's ``LOG_PERROR``), which is
what supervisord captures (unchanged: each instance has its own log there).
We call libc ``syslog()`` with the facility or-ed into each priority instead of re-opening the
log on a facility change: a chrooted worker could not reconnect to /dev/log, but the socket it
already holds keeps working.

The logger is the engine's own (`EngineLog`), not the standard library's `logging`: the engine
needs one logger with two destinations, and `logging` imports `threading`, `traceback`,
`weakref`, `string` and more, about 1 MiB of every engine process and a few milliseconds
before the first packet (docs/performance.md).  The lines are the same as they were.
"""

from __future__ import annotations

import os
import re
import sys
import syslog

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import TextIO

IDENT = "teredo-engine"
INSTANCE_ENV = "MIREDOCTL_INSTANCE"  # set by miredoctl's program sections (docs/contracts.md)
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOGGER_NAME = "teredo-engine"

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
"""The levels, with `logging`'s numbers."""
LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error",
               CRITICAL: "critical"}

#: `SyslogFacility` values miredo accepts (case-insensitive), mapped to libc's numbers.
FACILITIES: dict[str, int] = {
    "auth": syslog.LOG_AUTH,
    "authpriv": getattr(syslog, "LOG_AUTHPRIV", syslog.LOG_AUTH),
    "cron": syslog.LOG_CRON,
    "daemon": syslog.LOG_DAEMON,
    "ftp": getattr(syslog, "LOG_FTP", syslog.LOG_DAEMON),
    "kern": syslog.LOG_KERN,
    "local0": syslog.LOG_LOCAL0,
    "local1": syslog.LOG_LOCAL1,
    "local2": syslog.LOG_LOCAL2,
    "local3": syslog.LOG_LOCAL3,
    "local4": syslog.LOG_LOCAL4,
    "local5": syslog.LOG_LOCAL5,
    "local6": syslog.LOG_LOCAL6,
    "local7": syslog.LOG_LOCAL7,
    "lpr": syslog.LOG_LPR,
    "mail": syslog.LOG_MAIL,
    "news": syslog.LOG_NEWS,
    "syslog": syslog.LOG_SYSLOG,
    "user": syslog.LOG_USER,
    "uucp": syslog.LOG_UUCP,
}

_LEVELS = {
    DEBUG: syslog.LOG_DEBUG,
    INFO: syslog.LOG_INFO,
    WARNING: syslog.LOG_WARNING,
    ERROR: syslog.LOG_ERR,
    CRITICAL: syslog.LOG_CRIT,
}


def syslog_ident() -> str:
    """``teredo-engine/<instance>`` when miredoctl named the instance, else ``teredo-engine``.
    Only a plain name is used: the ident is copied into every syslog line."""
    name = os.environ.get(INSTANCE_ENV, "")
    return f"{IDENT}/{name}" if _INSTANCE_NAME.fullmatch(name) else IDENT


def facility_number(name: str | None) -> int:
    """The libc facility for a `SyslogFacility` word; unknown words fall back to daemon."""
    if not name:
        return syslog.LOG_DAEMON
    return FACILITIES.get(name.lower(), syslog.LOG_DAEMON)


class SyslogHandler:
    """libc syslog(3) whose facility can change at run time (SIGHUP); a traceback, when
    there is one, goes into the same syslog message."""

    def __init__(self, facility: int) -> None:
        self.facility = facility
        syslog.openlog(syslog_ident(), syslog.LOG_PID | syslog.LOG_NDELAY, facility)

    def emit(self, level: int, message: str, trace: str | None) -> None:
        prio = _LEVELS.get(level, syslog.LOG_INFO)
        syslog.syslog(self.facility | prio, message if trace is None else f"{message}\n{trace}")


class StderrHandler:
    """``teredo-engine[PID]: message`` (``warning: `` and up prefixed with the level's name);
    the pid is read per line because workers fork.  Tracebacks stay in syslog."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, level: int, message: str, trace: str | None) -> None:
        if level >= WARNING:
            message = f"{LEVEL_NAMES.get(level, 'error')}: {message}"
        self.stream.write(f"{IDENT}[{os.getpid()}]: {message}\n")
        self.stream.flush()


class EngineLog:
    """The engine's logger: ``log.info("format %s", arg)`` and the rest of `logging.Logger`'s
    calls the engine makes, to the handlers `setup_logging` installs."""

    def __init__(self) -> None:
        self.level = WARNING
        self.handlers: list[SyslogHandler | StderrHandler] = []
        self.configured = False

    def _log(self, level: int, msg: str, args: tuple[object, ...],
             trace: str | None = None) -> None:
        if level < self.level:
            return
        try:
            message = msg % args if args else str(msg)
        except Exception:  # a bad format must not take the daemon down: log it as it is
            message = f"{msg} {args!r}"
        if not self.configured:  # before set-up, like logging's last resort: stderr, bare
            if level >= WARNING:
                sys.stderr.write(message + "\n")
            return
        for handler in self.handlers:
            try:
                handler.emit(level, message, trace)
            except Exception:  # logging must never take the daemon down
                pass

    def debug(self, msg: str, *args: object) -> None:
        self._log(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._log(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._log(WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._log(ERROR, msg, args)

    def critical(self, msg: str, *args: object) -> None:
        self._log(CRITICAL, msg, args)

    def exception(self, msg: str, *args: object) -> None:
        """`error` with the current exception's traceback (in syslog)."""
        self._log(ERROR, msg, args, _traceback())


def _traceback() -> str | None:
    """The exception being handled, as `logging` formats it; imported on this rare path."""
    info = sys.exc_info()
    if info[0] is None:
        return None
    try:
        import traceback

        return "".join(traceback.format_exception(*info)).rstrip("\n")
    except Exception:  # e.g. a chrooted worker that can no longer import
        return f"{info[0].__name__}: {info[1]}"


_LOG = EngineLog()


def setup_logging(facility: str | None, foreground: bool, *, use_syslog: bool = True) -> None:
    """Install the handlers once per process (again after a config reload is fine)."""
    _LOG.handlers = []
    _LOG.level = INFO
    _LOG.configured = True
    if use_syslog:
        _LOG.handlers.append(SyslogHandler(facility_number(facility)))
    if foreground:
        _LOG.handlers.append(StderrHandler(sys.stderr))


def set_facility(facility: str | None) -> None:
    """Apply a new `SyslogFacility` to the running handlers (SIGHUP path)."""
    for h in _LOG.handlers:
        if isinstance(h, SyslogHandler):
            h.facility = facility_number(facility)


def detach_stderr() -> None:
    """Drop the stderr handler once stdio points at /dev/null (daemon mode)."""
    _LOG.handlers = [h for h in _LOG.handlers if not isinstance(h, StderrHandler)]


def get_logger() -> EngineLog:
    return _LOG
