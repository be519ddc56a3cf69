"""Errors and exit codes shared by every miredoctl command.

The exit codes follow the LSB/supervisorctl convention so scripts can tell "something is down"
(3) from "you named something that does not exist / the daemon is gone" (4) without parsing text.
"""

from __future__ import annotations

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


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem, printed as `file:line: message` (line 0 = the file as a whole)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}: {self.message}"


class InventoryError(MiredoctlError):
    """Every problem found in one pass; the CLI prints them all, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))
