"""Notifications: tell an operator's command and/or webhook about state changes that matter.

Why a queue and a thread: the health listener (miredoctl/listeners/health.py) answers
supervisord's events; a webhook that hangs or a command that sleeps must never hold it up, or
supervisord's event buffer fills and events are lost (docs/miredoctl.md, "Lost events are
reported"). So events are queued (bounded: the oldest waiting ones are dropped, and said so,
when the queue is full) and one worker thread delivers them one after the other, in the order
they happened, each delivery bounded by `timeout`. A failed delivery is logged and forgotten:
notifications are a courtesy, the history (`history/NAME.health.jsonl`) is the record.

Inventory (`defaults.yaml`, fleet-wide; checked by miredoctl/notify_settings.py):

    notify:
      command: [/usr/local/bin/teredo-alert, --fleet, lab]   # or one string, split like a shell
      webhook: http://127.0.0.1:8080/teredo                   # HTTP POST of the same JSON
      timeout: 10                                             # seconds per delivery (1-300)
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT = 10
QUEUE_LIMIT = 1000
# the kinds of event, as the JSON's "event" says them (docs/miredoctl.md, "Notifications")
FATAL = "fatal"
FLAPPING = "flapping"
UNQUALIFIED = "unqualified"
QUALIFIED = "qualified"
MAPPING_CHANGED = "mapping_changed"
ADDRESS_CHANGED = "address_changed"
HEALTH_ACTION = "health_action"


@dataclass(frozen=True)
class NotifyTarget:
    """Where events go (from the settings file `up` wrote, listeners/healthrules.py)."""

    command: tuple[str, ...] | None
    webhook: str | None
    timeout: float

    @staticmethod
    def from_json(data: Any) -> NotifyTarget | None:
        if not isinstance(data, dict):
            return None
        command = data.get("command")
        webhook = data.get("webhook")
        timeout = data.get("timeout", DEFAULT_TIMEOUT)
        if not (isinstance(command, list) and command and all(isinstance(w, str)
                                                               for w in command)):
            command = None
        if not isinstance(webhook, str) or not webhook:
            webhook = None
        if command is None and webhook is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            timeout = DEFAULT_TIMEOUT
        return NotifyTarget(tuple(command) if command else None, webhook, float(timeout))


def deliver(target: NotifyTarget, event: dict[str, Any]) -> list[str]:
    """Send one event to the command and the webhook; returns the failures (one line each)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    failures = []
    if target.command:
        try:
            proc = subprocess.run(list(target.command), input=body, capture_output=True,
                                  timeout=target.timeout, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip().splitlines()
                failures.append(f"command {target.command[0]} exited {proc.returncode}"
                                + (f": {err[-1]}" if err else ""))
        except subprocess.TimeoutExpired:
            failures.append(f"command {target.command[0]} did not finish within "
                            f"{target.timeout:g} s (killed)")
        except OSError as exc:
            failures.append(f"command {target.command[0]}: {exc}")
    if target.webhook:
        request = urllib.request.Request(target.webhook, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "miredoctl-notify"})
        try:
            with urllib.request.urlopen(request, timeout=target.timeout) as answer:
                answer.read(65536)
        except urllib.error.HTTPError as exc:
            failures.append(f"webhook {target.webhook}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            failures.append(f"webhook {target.webhook}: {reason}")
    return failures


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Notifier:
    """Delivers events in order on one worker thread; `send` never blocks."""

    def __init__(self, log: Callable[[str], None] = _stderr, limit: int = QUEUE_LIMIT,
                 send: Callable[[NotifyTarget, dict[str, Any]], list[str]] = deliver) -> None:
        self._queue: queue.Queue[tuple[NotifyTarget, dict[str, Any]] | None] = \
            queue.Queue(maxsize=limit)
        self._log = log
        self._send = send
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def send(self, target: NotifyTarget | None, event: dict[str, Any]) -> None:
        """Queue one event for `target` (None: notifications are off, nothing happens)."""
        if target is None:
            return
        while True:
            try:
                self._queue.put_nowait((target, event))
                return
            except queue.Full:
                try:  # drop the oldest waiting event: the newest says how things are now
                    old = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.dropped += 1
                what = old[1].get("event") if old else "?"
                self._log(f"notify: queue full ({self._queue.maxsize}), dropped a waiting "
                          f"{what} event")

    def close(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued (tests; a listener just exits)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            target, event = item
            try:
                failures = self._send(target, event)
            except Exception as exc:  # never let one event stop the deliveries
                failures = [f"{type(exc).__name__}: {exc}"]
            for failure in failures:
                self._log(f"notify: {event.get('event')} {event.get('instance')}: {failure}")
