"""Lines of a miredo.conf / miredo-server.conf file -> (name, value) entries.

The rules are miredo's (`conf.c`): a line is split on whitespace, the first token is the
directive name (case-insensitive), the second the value, and anything after that is not used;
a line is a comment only when its first token starts with `#`. Two miredo bugs are fixed here:
the last line counts even without a trailing newline, and a line too long for miredo's buffer
is an error rather than a silent skip.
"""

from __future__ import annotations

import re

from engine.proto.records import dataclass, field

LINE_BUFFER = 1056
"""miredo's fgets buffer: a line fits when its bytes *including the newline* are at most
LINE_BUFFER - 1, i.e. 1055 bytes."""
MAX_LINE = LINE_BUFFER - 1
MAX_NAME = 31
MAX_VALUE = 1023
"""sscanf widths in miredo (`%31s %1023s`): longer tokens would be cut apart there."""

# sscanf's %s stops at C isspace(): space \t \n \v \f \r. Python's str.split() knows more.
_SPACES = re.compile(rb"[ \t\n\v\f\r]+")


@dataclass
class Entry:
    """One directive line. `value` is None for a name with nothing after it."""

    name: str
    value: str | None
    line: int
    extra: list[str] = field(default_factory=list)


@dataclass
class Lines:
    entries: list[Entry]
    problems: list[str]
    warnings: list[str]


def split_lines(data: bytes, path: str) -> Lines:
    """Tokenise a whole file; problems are `path:line: message` strings, never exceptions."""
    entries: list[Entry] = []
    problems: list[str] = []
    warnings: list[str] = []
    raw_lines = data.split(b"\n")
    last_has_newline = raw_lines[-1] == b""
    if last_has_newline:
        raw_lines.pop()
    for number, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{number}"
        if len(raw) + 1 > MAX_LINE:
            problems.append(
                f"{where}: line too long ({len(raw) + 1} bytes with its newline; "
                f"at most {MAX_LINE} fit, longer lines are skipped by miredo)"
            )
            continue
        tokens = [t for t in _SPACES.split(raw) if t]
        if not tokens or tokens[0].startswith(b"#"):
            continue
        try:
            words = [t.decode("utf-8") for t in tokens]
        except UnicodeDecodeError:
            problems.append(f"{where}: line is not valid UTF-8 text")
            continue
        name = words[0]
        if len(tokens[0]) > MAX_NAME:
            problems.append(f"{where}: directive name {name[:40]!r} is over {MAX_NAME} bytes long")
            continue
        value = words[1] if len(words) > 1 else None
        if value is not None and len(tokens[1]) > MAX_VALUE:
            problems.append(f"{where}: {name}: value is longer than {MAX_VALUE} bytes")
            continue
        entries.append(Entry(name=name, value=value, line=number, extra=words[2:]))
    if raw_lines and not last_has_newline and entries and entries[-1].line == len(raw_lines):
        warnings.append(
            f"{path}:{len(raw_lines)}: warning: the last line has no newline at its end; "
            "it is used here, but miredo would ignore it"
        )
    return Lines(entries, problems, warnings)
