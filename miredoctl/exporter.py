"""`miredoctl exporter`: the fleet's metrics over HTTP for Prometheus, until SIGTERM.

Why prometheus-client's own server (`start_http_server`) and not a handler of ours: it speaks
the exposition formats Prometheus negotiates (text, OpenMetrics, gzip) and picks the address
family for an IPv6 listen address. Every scrape runs `FleetCollector.collect`, so the answer
is as fresh as the request. The fleet's supervisord runs this as the program `_exporter` when
the inventory says `exporter: {listen: ...}` (render.exporter_program); it can also be run by
hand, e.g. under another supervisor.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from prometheus_client import start_http_server

from miredoctl.errors import MiredoctlError, UsageError
from miredoctl.inventory import FieldError, parse_listen
from miredoctl.metrics import FleetCollector, registry_for


def listen_address(listen: str) -> tuple[str, int]:
    """`--listen` checked by the same rule as the inventory's `exporter.listen`."""
    try:
        return parse_listen(listen)
    except FieldError as exc:
        raise UsageError(f"--listen {exc}")


def serve(collector: FleetCollector, listen: str, stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (by SIGTERM/SIGINT when run as a program)."""
    host, port = listen_address(listen)
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry_for(collector))
    except OSError as exc:
        raise MiredoctlError(f"exporter: cannot listen on {listen}: {exc.strerror or exc}")
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"miredoctl exporter: serving http://{shown}/metrics for fleet "
          f"{collector.fleet_dir} (state {collector.paths.root})", file=sys.stderr, flush=True)
    if stop is None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    print("miredoctl exporter: stopped", file=sys.stderr, flush=True)
