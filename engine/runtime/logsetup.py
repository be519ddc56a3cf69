"""Logging: syslog with miredo's facilities, plus stderr in the foreground.

The ident is ``teredo-engine`` with the pid, like miredo's ``LOG_PID``; under miredoctl, which
starts every engine with MIREDOCTL_INSTANCE set to the instance's name, it is
``teredo-engine/<instance>``, so the lines of a fleet's engines in one syslog say whose they
are.  In the foreground the same lines also go to stderr (miredo's ``LOG_PERROR``), which is
what supervisord captures (unchanged: each instance has its own log there).
We call libc ``syslog()`` with the facility or-ed into each priority instead of re-opening the
log on a facility change: a chrooted worker could not reconnect to /dev/log, but the socket it
already holds keeps working.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import syslog

IDENT = "teredo-engine"
INSTANCE_ENV = "MIREDOCTL_INSTANCE"  # set by miredoctl's program sections (docs/contracts.md)
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOGGER_NAME = "teredo-engine"

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
    logging.DEBUG: syslog.LOG_DEBUG,
    logging.INFO: syslog.LOG_INFO,
    logging.WARNING: syslog.LOG_WARNING,
    logging.ERROR: syslog.LOG_ERR,
    logging.CRITICAL: syslog.LOG_CRIT,
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


class SyslogHandler(logging.Handler):
    """A handler over libc syslog(3) whose facility can change at run time (SIGHUP)."""

    def __init__(self, facility: int) -> None:
        super().__init__()
        self.facility = facility
        syslog.openlog(syslog_ident(), syslog.LOG_PID | syslog.LOG_NDELAY, facility)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prio = _LEVELS.get(record.levelno, syslog.LOG_INFO)
            syslog.syslog(self.facility | prio, self.format(record))
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


class _StderrFormatter(logging.Formatter):
    """``teredo-engine[PID]: message``; the pid is read per record because workers fork."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname.lower()}: {msg}"
        return f"{IDENT}[{os.getpid()}]: {msg}"


def setup_logging(facility: str | None, foreground: bool, *, use_syslog: bool = True) -> None:
    """Install the handlers once per process (again after a config reload is fine)."""
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        log.removeHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    if use_syslog:
        sh = SyslogHandler(facility_number(facility))
        sh.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(sh)
    if foreground:
        eh = logging.StreamHandler(sys.stderr)
        eh.setFormatter(_StderrFormatter())
        log.addHandler(eh)


def set_facility(facility: str | None) -> None:
    """Apply a new `SyslogFacility` to the running handlers (SIGHUP path)."""
    for h in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(h, SyslogHandler):
            h.facility = facility_number(facility)


def detach_stderr() -> None:
    """Drop the stderr handler once stdio points at /dev/null (daemon mode)."""
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, SyslogHandler):
            log.removeHandler(h)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
