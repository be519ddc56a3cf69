"""Errors and exit codes shared by every miredoctl command.

The exit codes follow the LSB/supervisorctl convention so scripts can tell "something is down"
(3) from "you named something that does not exist / the daemon is gone" (4) without parsing text.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4


class MiredoctlError(Exception):
    """A one-line, user-facing error; `code` is the process exit code the CLI returns."""

    code = EXIT_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(MiredoctlError):
    code = EXIT_USAGE


class UnknownInstanceError(MiredoctlError):
    code = EXIT_UNKNOWN


class SupervisorUnreachable(MiredoctlError):
    code = EXIT_UNKNOWN


class StateFolderError(MiredoctlError):
    """The state folder refused a write (read-only, full): `path: reason`, exit 1."""


# Characters that can end a line somewhere: C0/C1 controls (newline, CR, NUL, ESC, DEL, NEL) for
# INI and miredo.conf readers, and the Unicode line/paragraph separators for str.splitlines().
_LINE_BREAKING = ("Cc", "Zl", "Zp")


def bad_character(text: str) -> str | None:
    """The first character that must never reach a rendered file or a one-line message, named
    for the operator (`newline (U+000A)`), or None."""
    for char in text:
        if unicodedata.category(char) in _LINE_BREAKING:
            name = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\0": "NUL",
                    "\x1b": "ESC", "\x7f": "DEL"}.get(char) or unicodedata.name(char, "control")
            return f"{name} (U+{ord(char):04X})"
    return None


def printable(text: str) -> str:
    """`text` with every line-breaking or control character escaped, so a hostile file name or
    key cannot split one message into several lines (or move the terminal's cursor)."""
    if bad_character(text) is None:
        return text
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _LINE_BREAKING else c
                   for c in text)


def one_line(text: str) -> str:
    """A message from elsewhere (supervisord's two-line CANT_REREAD fault) as the one line every
    miredoctl error is: its lines joined with ' | ', anything else unprintable escaped."""
    return printable(" | ".join(line.strip() for line in text.splitlines() if line.strip()))


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem, printed as `file:line: message` (line 0 = the file as a whole)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return printable(f"{self.file}:{self.line}: {self.message}")
        return printable(f"{self.file}: {self.message}")


class InventoryError(MiredoctlError):
    """Every problem found in one pass; the CLI prints them all, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))
