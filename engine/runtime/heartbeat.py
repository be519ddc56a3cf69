"""The parent's watch over its worker's loop (issue 9 flaw 7: a frozen worker looked healthy).

A worker can stop serving without exiting: SIGSTOP, a callback stuck in a loop, a deadlock in
a library.  Its process lives, so SIGCHLD never comes, yet traffic and the status socket
stand still.  The parent therefore sends a `ping` on the control socket every
`INTERVAL` seconds and the worker's loop answers `pong` when it reads it; the time since the
last `pong` is how long the loop has not turned.

This class is the decision alone (no clock reads, no I/O), so it is tested without processes:
the parent feeds it `beat(now)` on every pong and asks `check(now)` on every tick.
"""

from __future__ import annotations

from engine.proto.records import dataclass

INTERVAL = 1.0
"""Seconds between pings: a loop that turns answers within microseconds."""
REPORT_AFTER = 3.0
"""Seconds of silence before the worker is reported unresponsive (log and status): three
missed beats, so one slow wake-up (a big `peers` answer, a gc pass) is never reported."""
DEFAULT_WATCHDOG = 10
"""`WorkerWatchdog`'s default (`EngineConfig.worker_watchdog`, 2-3600 or 0 for off)."""

OK, UNRESPONSIVE, KILL = "ok", "unresponsive", "kill"


@dataclass
class Heartbeat:
    """Silence accounting for one worker generation.

    `watchdog` is `WorkerWatchdog` in seconds; 0 reports but never restarts.  The watch
    starts at `arm(now)` (the worker's Ready: building a role is not a frozen loop).
    """

    watchdog: float = DEFAULT_WATCHDOG
    last_beat: float | None = None
    """When the worker was last known to turn its loop: the sending of the last ping it
    answered (not the arrival of the pong, which would add up to one interval of slack)."""
    reported: bool = False
    pinged: float | None = None

    def arm(self, now: float) -> None:
        self.last_beat = now
        self.reported = False
        self.pinged = None

    def disarm(self) -> None:
        self.last_beat = None
        self.reported = False
        self.pinged = None

    def ping(self, now: float) -> None:
        """A ping went out; its pong proves the loop turned after `now`."""
        self.pinged = now

    def beat(self, now: float) -> float | None:
        """A pong arrived; returns how long the worker had been reported silent, or None."""
        was = self.silence(now) if self.reported else None
        if self.last_beat is not None:
            self.last_beat = max(self.last_beat, self.pinged if self.pinged is not None else now)
        self.reported = False
        return was

    def silence(self, now: float) -> float:
        return 0.0 if self.last_beat is None else max(0.0, now - self.last_beat)

    def check(self, now: float) -> str:
        """`KILL` once the silence reaches the watchdog; `UNRESPONSIVE` once (the first tick
        past `REPORT_AFTER`, or past the watchdog when it is shorter); `OK` otherwise."""
        if self.last_beat is None:
            return OK
        quiet = now - self.last_beat
        if self.watchdog and quiet >= self.watchdog:
            return KILL
        limit = min(REPORT_AFTER, self.watchdog) if self.watchdog else REPORT_AFTER
        if quiet >= limit and not self.reported:
            self.reported = True
            return UNRESPONSIVE
        return OK
