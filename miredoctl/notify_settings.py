"""Check the inventory's `notify:` setting (defaults.yaml), as file:line problems.

Why apart from the notifier (miredoctl/listeners/notify.py): the notifier runs inside
supervisord and imports nothing of the command's modules (docs/architecture.md); checking the
setting needs the inventory's YAML reader and its value checkers.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from collections.abc import Callable
from typing import Any

import yaml

from miredoctl.inventory import BAD_VALUE, FieldError, _describe, _int_range, _str, did_you_mean
from miredoctl.listeners.notify import DEFAULT_TIMEOUT

NOTIFY_KEYS = ("command", "webhook", "timeout")


def notify_setting(reader: Any, vnode: yaml.Node) -> dict[str, Any] | None:
    """Check `notify:` of defaults.yaml; problems go to the reader as file:line.

    `reader` is inventory's YAML reader (value, mapping, problem). The command must be an
    absolute path to an executable here and now: a typo found at validate beats a silent
    notification that never runs."""
    value = reader.value(vnode)
    if value is None or value is BAD_VALUE:
        return None
    if not isinstance(value, dict):
        reader.problem(vnode.start_mark.line + 1,
                       f"notify must be a mapping with 'command:' and/or 'webhook:' (and "
                       f"'timeout:'), or null, got {_describe(value)}")
        return None
    out: dict[str, Any] = {"command": None, "webhook": None, "timeout": DEFAULT_TIMEOUT}
    ok = True
    for key, kline, knode in reader.mapping(vnode, "notify"):
        if key not in NOTIFY_KEYS:
            reader.problem(kline, f"unknown key '{key}' in notify{did_you_mean(key, NOTIFY_KEYS)}"
                                  "; it has 'command:', 'webhook:' and 'timeout:'")
            ok = False
            continue
        item = reader.value(knode)
        line = knode.start_mark.line + 1
        if item is BAD_VALUE:
            ok = False
            continue
        if item is None:
            continue
        try:
            if key == "command":
                out["command"] = _command(item, _str)
            elif key == "webhook":
                out["webhook"] = _webhook(_str(item))
            else:
                out["timeout"] = _int_range(1, 300)(item)
        except FieldError as exc:
            reader.problem(line, f"notify.{key} {exc}")
            ok = False
    if ok and out["command"] is None and out["webhook"] is None:
        reader.problem(vnode.start_mark.line + 1,
                       "notify needs 'command:' or 'webhook:' (or use notify: null)")
        return None
    return out if ok else None


def _command(value: Any, as_str: Callable[[Any], str]) -> list[str]:
    if isinstance(value, str):
        try:
            argv = shlex.split(as_str(value))
        except ValueError as exc:
            raise FieldError(f"cannot be split into words: {exc}") from None
    elif isinstance(value, list) and value:
        argv = [as_str(word) for word in value]
    else:
        raise FieldError(f"must be a command line (a string or a list of words), got "
                         f"{value!r}")
    if not argv:
        raise FieldError("must name a program")
    program = argv[0]
    if not program.startswith("/"):
        raise FieldError(f"must start with an absolute path (it runs without a shell and "
                         f"without PATH), got {program!r}")
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise FieldError(f"names no executable file on this machine: {program}")
    return argv


def _webhook(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(f"must be an http:// or https:// URL with a host, got {text!r}")
    return text
