"""`metrics` on a fleet across hosts: each host's exposition, merged into one with a `host`
label on every sample.

Each host's agent answers `miredoctl metrics` for its own share (docs/metrics.md describes the
metrics). The Prometheus text format wants every family's HELP and TYPE once and its samples
together, so the hosts' texts are not simply concatenated: samples are regrouped under their
family, in the order the families first appear, each with `host="<inventory name>"` first among
its labels (a metric already labelled by the instance name stays unique across hosts that way,
and `teredo_supervisord_up` and the like say which host's supervisord they are about).
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_info")


def _label(host: str) -> str:
    escaped = host.replace("\\", "\\\\").replace('"', '\\"')
    return f'host="{escaped}"'


def with_host(line: str, host: str) -> str:
    """One sample line with the host label added first."""
    m = _NAME.match(line)
    if m is None:
        return line
    name, rest = m.group(0), line[m.end():]
    if rest.startswith("{}"):
        return f"{name}{{{_label(host)}}}{rest[2:]}"
    if rest.startswith("{"):
        return f"{name}{{{_label(host)},{rest[1:]}"
    return f"{name}{{{_label(host)}}}{rest}"


def merge(texts: dict[str, str]) -> str:
    """The hosts' expositions (host -> text, in host order) as one exposition."""
    meta: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    order: list[str] = []
    for host, text in texts.items():
        family = None
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(maxsplit=3)
                if len(parts) < 3:
                    continue
                family = parts[2]
                if family not in meta:
                    meta[family], samples[family] = [], []
                    order.append(family)
                if not any(m.split(maxsplit=2)[:2] == parts[:2] for m in meta[family]):
                    meta[family].append(line)
                continue
            if not line.strip() or line.startswith("#"):
                continue
            m = _NAME.match(line)
            name = m.group(0) if m else ""
            owner = family if family and (name == family or (
                name.startswith(family) and name[len(family):] in _SUFFIXES)) else name
            if owner not in samples:
                meta[owner], samples[owner] = [], []
                order.append(owner)
            samples[owner].append(with_host(line, host))
    out = []
    for family in order:
        out += meta[family] + samples[family]
    return "\n".join(out) + ("\n" if out else "")
