"""`teredo-engine --status`: ask an instance over its status socket and print the answer.

The human form reads like ``wg show``: a header line with the interface, then indented
``key: value`` lines, most useful first, with counters and drops at the end.  ``--json``
prints the engine's object unchanged for scripts and for miredoctl.
"""

from __future__ import annotations

import json
import sys
import time

from engine.options import status_socket_path
from engine.runtime.status_server import query

TYPE_CHECKING = False  # `typing` stays unimported at run time (docs/performance.md)
if TYPE_CHECKING:
    from typing import Any


def resolve_path(opts: Any) -> str:
    """The socket by the rule of contracts.md §4, reading the config only when needed."""
    if getattr(opts, "status_socket", None):
        return opts.status_socket
    directive, role = None, "client"
    try:
        from engine.config import load_config

        config = load_config(opts.config_path, server_name=getattr(opts, "server_name", None))
        directive, role = config.status_socket, config.role
    except Exception:  # an unreadable config still lets us try the pid-file rule
        pass
    return status_socket_path(None, directive, getattr(opts, "pidfile", None), role)


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def _ago(ts: Any, now: float) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    secs = max(0, int(now - ts))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m}m {s}s ago" if h else (f"{m}m {s}s ago" if m else f"{s}s ago")


def format_status(st: dict[str, Any], now: float | None = None) -> str:
    """The human-readable form of one status object."""
    now = time.time() if now is None else now
    lines = [f"interface: {st.get('interface') or '(none)'}"]

    def add(key: str, value: Any) -> None:
        if value is not None and value != "" and value != []:
            lines.append(f"  {key}: {value}")

    role = st.get("role")
    rt = st.get("relay_type")
    add("role", f"{role} ({rt})" if rt and rt != role else role)
    add("state", st.get("state"))
    worker = st.get("worker")
    if worker not in (None, "running"):  # the parent answers for a frozen worker (§4)
        silent = st.get("worker_silent")
        add("worker", f"{worker}" + (f" (no heartbeat for {silent:g} s)"
                                     if isinstance(silent, (int, float)) else ""))
    add("pid", st.get("pid"))
    add("data path", st.get("data_path"))
    add("started", _ago(st.get("started"), now))
    add("address", st.get("address"))
    add("prefix", st.get("prefix"))
    add("mtu", st.get("mtu"))
    servers = [s for s in (st.get("server"), st.get("server2")) if s]
    add("server", ", ".join(servers) if servers else None)
    mapped = st.get("mapped")
    if isinstance(mapped, dict) and mapped.get("ip"):
        nat = f" ({st['nat']})" if st.get("nat") else ""
        add("mapped", f"{mapped['ip']}:{mapped.get('port')}{nat}")
    add("last qualified", _ago(st.get("last_qualified"), now))
    add("listening", ", ".join(st.get("bound") or []))
    peers = st.get("peers")
    if isinstance(peers, dict):
        extra = f" ({peers['trusted']} trusted)" if peers.get("trusted") is not None else ""
        add("peers", f"{peers.get('count', 0)}{extra}")
    add("worker restarts", st.get("worker_restarts") or None)
    c = st.get("counters") or {}
    if c:
        add(
            "udp",
            f"{_bytes(c.get('udp_in_bytes', 0))} received ({c.get('udp_in_packets', 0)} pkts), "
            f"{_bytes(c.get('udp_out_bytes', 0))} sent ({c.get('udp_out_packets', 0)} pkts)",
        )
        if role != "server":
            add(
                "tunnel",
                f"{_bytes(c.get('tun_in_bytes', 0))} from host "
                f"({c.get('tun_in_packets', 0)} pkts), "
                f"{_bytes(c.get('tun_out_bytes', 0))} to host ({c.get('tun_out_packets', 0)} pkts)",
            )
        elif c.get("raw6_out_packets") is not None:
            add(
                "native",
                f"{_bytes(c.get('raw6_out_bytes', 0))} sent "
                f"({c.get('raw6_out_packets', 0)} pkts)",
            )
        drops = c.get("drops") or {}
        if drops:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1]))
            add("drops", parts)
    return "\n".join(lines)


def main(opts: Any, as_json: bool) -> int:
    """Print one instance's status; 1 with a one-line reason when it cannot be reached."""
    path = resolve_path(opts)
    try:
        st = query(path)
    except FileNotFoundError:
        print(f"teredo-engine: no status socket at {path} (instance not running?)",
              file=sys.stderr)
        return 1
    except OSError as e:
        print(f"teredo-engine: cannot query {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"teredo-engine: bad answer from {path}: {e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        print(format_status(st))
    return 0
