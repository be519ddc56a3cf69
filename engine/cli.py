"""`teredo-engine`: the miredo(8) command line, plus `--check` and `--status`.

The flags, their duplicates rule and the exit codes are miredo's (0 ok, 1 error, 2 usage),
so scripts and unit files written for miredo keep working. Usage errors are one line on
stderr; `--check` never shows a traceback, whatever the file holds.
"""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

from engine import __version__
from engine.config import ConfigError, EngineConfig, load_config, peek_role_and_status_socket
from engine.options import (
    DEFAULT_CONFIG,
    DEFAULT_PIDFILE,
    DEFAULT_USER,
    FALLBACK_USER,
    RunOptions,
    status_socket_path,
)

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

PROG = "teredo-engine"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

USAGE = f"""\
Usage: {PROG} [-f] [-c FILE] [-p PIDFILE] [-u USER] [-t DIR] [--status-socket PATH] [SERVER]
       {PROG} --check [--strict] [-c FILE | FILE...]
       {PROG} --status [--status-socket PATH | -c FILE] [--json]
"""

HELP = USAGE + f"""
Runs a Teredo client, relay or server (RFC 4380), configured by a miredo.conf or
miredo-server.conf file. SERVER overrides ServerAddress (client) or ServerBindAddress
(server; the secondary address then becomes SERVER + 1).

  -c, --conf, --config FILE  configuration file (default: {DEFAULT_CONFIG})
  -f, --foreground           run in the foreground
  -p, --pidfile FILE         pid file (default: {DEFAULT_PIDFILE})
  -u, --user, --username USER
                             drop privileges to USER (default: {DEFAULT_USER}, or
                             {FALLBACK_USER} with a warning when there is no {DEFAULT_USER})
  -t, --chroot, --chrootdir DIR
                             chroot to DIR after set-up
      --status-socket PATH   status socket path
      --check                check the configuration file(s) and exit (warnings are
                             printed, only errors fail it; with several files, every
                             line names its file and any failing file fails it)
      --strict               with --check: warnings fail it too (miredo-checkconf)
      --status               print the status of a running instance
      --json                 with --status: print it as JSON
  -V, --version              print the version and exit
  -h, --help                 print this help and exit

Exit status: 0 success, 1 error (with --check: a problem in the file), 2 usage error.
"""

VERSION = f"""\
{PROG} {__version__}
A miredo-compatible Teredo engine (client, relay and server roles).
"""


class UsageError(Exception):
    """A command line that cannot be run; main() turns it into one stderr line and exit 2."""


def _parser() -> argparse.ArgumentParser:
    """The reference parser (argparse), imported only for a command line `_parse_plain`
    leaves to it: unknown options, clustered short flags, values that start with ``-``..."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    class _Once(argparse.Action):
        """Store an option's value, refusing a second one like miredo does for -c -p -u -t."""

        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            if getattr(namespace, self.dest) is not None:
                raise UsageError(f"option {'/'.join(self.option_strings)} given twice")
            setattr(namespace, self.dest, values)

    p = _Parser(prog=PROG, add_help=False, allow_abbrev=False, usage=USAGE)
    values = dict(VALUE_OPTIONS)
    for names, dest in sorted((*VALUE_OPTIONS, *FLAG_OPTIONS), key=lambda o: _ORDER[o[1]]):
        if names in values:  # the order of --help and of the manual page (man/generate.py)
            p.add_argument(*names, dest=dest, action=_Once, metavar=_METAVARS[dest])
        else:
            p.add_argument(*names, dest=dest, action="store_true")
    p.add_argument("args", nargs="*", metavar="SERVER")
    return p


VALUE_OPTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("-c", "--conf", "--config"), "config"),
    (("-p", "--pidfile"), "pidfile"),
    (("-u", "--user", "--username"), "user"),
    (("-t", "--chroot", "--chrootdir"), "chrootdir"),
    (("--status-socket",), "status_socket"),
)
"""Options that take one value, given at most once (miredo's -c -p -u -t)."""
FLAG_OPTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("-f", "--foreground"), "foreground"),
    (("--check",), "check"),
    (("--strict",), "strict"),
    (("--status",), "status"),
    (("--json",), "json"),
    (("-V", "--version"), "version"),
    (("-h", "--help"), "help"),
)
_ORDER = {dest: n for n, dest in enumerate(
    ("config", "foreground", "pidfile", "user", "chrootdir", "status_socket", "check", "strict",
     "status", "json", "version", "help"))}
_METAVARS = {"config": "FILE", "pidfile": "FILE", "user": "USER", "chrootdir": "DIR",
             "status_socket": "PATH"}
_VALUE_OF = {name: (names, dest) for names, dest in VALUE_OPTIONS for name in names}
_FLAG_OF = {name: dest for names, dest in FLAG_OPTIONS for name in names}


def _parse_plain(argv: list[str]) -> SimpleNamespace | None:
    """The command lines operators and unit files write (whole option names, ``--opt=value``,
    values and SERVER not starting with ``-``), parsed as `_parser` parses them; None for
    anything else, which `_parser` then handles with its own results and messages.

    Why: `argparse` (with `gettext`) is imported by nothing else before the fork; this keeps
    it off the start path (docs/performance.md, "Qualification").
    """
    ns = SimpleNamespace(**{dest: None for _names, dest in VALUE_OPTIONS},
                         **{dest: False for _names, dest in FLAG_OPTIONS}, args=[])
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg or arg[0] != "-":
            ns.args.append(arg)
            continue
        if arg in _FLAG_OF:
            setattr(ns, _FLAG_OF[arg], True)
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            if arg not in _VALUE_OF or i >= len(argv) or argv[i][:1] == "-":
                return None
            value = argv[i]
            i += 1
        elif name not in _VALUE_OF or not name.startswith("--"):
            return None
        names, dest = _VALUE_OF[name]
        if getattr(ns, dest) is not None:
            raise UsageError(f"option {'/'.join(names)} given twice")
        setattr(ns, dest, value)
    return ns


def parse_args(argv: list[str]) -> argparse.Namespace | SimpleNamespace:
    """Parse and check the combinations; raises UsageError."""
    ns = _parse_plain(argv)
    if ns is None:
        ns = _parser().parse_intermixed_args(argv)
    if ns.help or ns.version:
        return ns
    if ns.check and ns.status:
        raise UsageError("--check and --status cannot be used together")
    if ns.json and not ns.status:
        raise UsageError("--json only goes with --status")
    if ns.strict and not ns.check:
        raise UsageError("--strict only goes with --check")
    if len(ns.args) > 1 and not ns.check:
        raise UsageError(f"unexpected extra parameter: {ns.args[1]}")
    if ns.check and ns.args and ns.config is not None:
        raise UsageError("--check takes the file either with -c or as an argument, not both")
    if ns.status and ns.args:
        raise UsageError(f"unexpected extra parameter: {ns.args[0]}")
    return ns


def run_options(ns: argparse.Namespace | SimpleNamespace) -> RunOptions:
    return RunOptions(
        config_path=ns.config or DEFAULT_CONFIG,
        foreground=ns.foreground,
        pidfile=ns.pidfile or DEFAULT_PIDFILE,
        user=ns.user,
        chrootdir=ns.chrootdir,
        status_socket=ns.status_socket,
        server_name=ns.args[0] if ns.args and not ns.check else None,
    )


def main(argv: list[str] | None = None) -> int:
    """The command line's work; returns the exit code.  `teredo-engine` and ``python -m
    engine`` enter through `engine.launch.main`, which turns the cyclic collector off first."""
    try:
        ns = parse_args(sys.argv[1:] if argv is None else list(argv))
    except UsageError as e:
        print(f"{PROG}: {e} (try --help)", file=sys.stderr)
        return EXIT_USAGE
    if ns.help:
        sys.stdout.write(HELP)
        return EXIT_OK
    if ns.version:
        from engine.runtime.fastpath import describe  # only -V needs the runtime here

        sys.stdout.write(VERSION + describe() + "\n")
        return EXIT_OK
    if ns.check:
        return check_all(ns.args or [ns.config or DEFAULT_CONFIG], strict=ns.strict)
    opts = run_options(ns)
    if ns.status:
        return status(ns, opts)
    return run(ns, opts)


def _runtime_module(name: str) -> Any:
    """Import `engine.runtime.<name>` late: it pulls in sockets, netlink..."""
    return importlib.import_module(f"engine.runtime.{name}")


def _print_problems(error: ConfigError) -> None:
    """Errors and warnings together, in file order, so a fix-up pass sees everything."""
    lines = sorted([*error.problems, *getattr(error, "warnings", ())], key=_line_key)
    for line in lines:
        print(line, file=sys.stderr)


def _line_key(message: str) -> int:
    """The line number of a `file:line: ...` message; file-wide ones (no line) go last."""
    parts = message.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 1 << 62


def check(path: str, *, strict: bool = False) -> int:
    """`--check`: like miredo-checkconf, for all three roles.

    Warnings (superfluous directives, a last line without newline...) do not fail it, since
    the daemon runs with them; `strict` makes them fail, as every warning fails
    miredo-checkconf, for operators who want clean files.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        _print_problems(e)
        return EXIT_ERROR
    except Exception as e:  # a bug of ours must still not show the operator a traceback
        print(f"{path}: internal error while checking ({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_ERROR
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    if strict and config.warnings:
        n = len(config.warnings)
        print(f"{path}: {n} warning{'' if n == 1 else 's'}, failing because of --strict",
              file=sys.stderr)
        return EXIT_ERROR
    n = config.directive_count
    print(f"{path}: OK (role {config.role}, {n} directive{'' if n == 1 else 's'})")
    return EXIT_OK


def check_all(paths: list[str], *, strict: bool = False) -> int:
    """`--check` of several files in one process.

    A fleet manager checks hundreds of rendered configs; one interpreter start per file cost
    about 0.1 s each, one process for all of them costs about that in total. Each file's output
    is exactly what checking it alone prints, and every line starts with its file's name.
    """
    worst = EXIT_OK
    for path in paths:
        worst = max(worst, check(path, strict=strict))
    return worst


def status(ns: argparse.Namespace, opts: RunOptions) -> int:
    """`--status`: ask a running instance, through the runtime's status client."""
    role, directive = peek_role_and_status_socket(opts.config_path)
    opts.status_socket = status_socket_path(ns.status_socket, directive, ns.pidfile, role)
    return int(_runtime_module("status_client").main(opts, ns.json))


def run(ns: argparse.Namespace, opts: RunOptions) -> int:
    """Load the config (all problems reported, exit 1) and hand over to the daemon, which logs
    the warnings (stderr and syslog), as it does again on every reload."""
    try:
        config: EngineConfig = load_config(opts.config_path, server_name=opts.server_name)
    except ConfigError as e:
        _print_problems(e)
        print(f"{PROG}: fatal configuration error", file=sys.stderr)
        return EXIT_ERROR
    opts.status_socket = status_socket_path(
        ns.status_socket, config.status_socket, ns.pidfile, config.role
    )
    return int(_runtime_module("daemon").run(config, opts))
