"""Health checks that act: what the healer decides, and the files it keeps in the state folder.

Why the decisions live here, apart from the listener (listeners/health.py): they are
pure functions of what was seen and when (`now` is always passed in), so the rules can be tested
with a fake clock, while the listener only reads supervisord's events, probes the engines and
carries the decisions out.

The rules (docs/miredoctl.md, "Health checks"):
* `restart_unqualified_after: N` (clients): a RUNNING client that has not been qualified for N
  seconds (since it started, or since it was last seen qualified) is restarted; the next
  restart for the same reason comes N seconds later at the earliest.
* `stop_flapping: {restarts: M, within: S}`: an instance that supervisord restarted by itself
  (EXITED or BACKOFF -> STARTING) M times within S seconds is stopped, and a mark in the state
  folder says so. It stays stopped until an operator starts it (`up`, `restart`): supervisord
  never starts a STOPPED program by itself, the healer never starts one either, and an operator
  start (STARTING from STOPPED or FATAL) clears the mark.
* The healer never fights an operator: it acts only while it holds the fleet lock, which `up`,
  `down`, `restart` and `reload` hold while they work, and it re-reads the process right before
  acting (a restart is only done to the very pid it judged).

Files (next to `history/`, so they live where the histories live):
* `health.json`: the settings `up` wrote for the healer (what runs is what `up` applied);
* `health/NAME.stopped`: the "stopped by the health check" mark, one JSON object;
* `history/NAME.health.jsonl`: every action taken, one JSON object a line, for `status`/`show`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miredoctl.listeners import history
from miredoctl.listeners.notify import (
    ADDRESS_CHANGED,
    FATAL,
    FLAPPING,
    MAPPING_CHANGED,
    QUALIFIED,
    UNQUALIFIED,
    NotifyTarget,
)
from miredoctl.state import write_atomic

SETTINGS_VERSION = 1
# a client that just started needs a few seconds to qualify: it is not "lost" before this
QUALIFY_GRACE = 30.0
RESTART = "restart"
STOP = "stop"
FATAL_NAME = "FATAL"
STARTING_NAME = history.STARTING
ACTIVE_NAMES = frozenset({"STARTING", "RUNNING", "BACKOFF"})


# -- files -----------------------------------------------------------------------------------
def settings_path(histories: Path) -> Path:
    return histories.parent / "health.json"


def marks_dir(histories: Path) -> Path:
    return histories.parent / "health"


def mark_path(histories: Path, name: str) -> Path:
    return marks_dir(histories) / f"{name}.stopped"


def actions_path(histories: Path, name: str) -> Path:
    return histories / f"{name}.health.jsonl"


@dataclass(frozen=True)
class StopFlapping:
    restarts: int
    within: float


@dataclass(frozen=True)
class InstanceHealth:
    """The healer's view of one instance of the inventory."""

    name: str
    role: str
    engine: str
    netns: str | None = None
    interface: str | None = None
    restart_unqualified_after: float | None = None
    stop_flapping: StopFlapping | None = None


@dataclass(frozen=True)
class Settings:
    instances: dict[str, InstanceHealth]
    notify: NotifyTarget | None = None
    fleet: str = ""


def settings_text(fleet: Any) -> str:
    """The settings file for a validated `Fleet` (written by `up`, read by the healer)."""
    instances = {}
    for name, inst in sorted(fleet.instances.items()):
        if not inst.enabled:
            continue
        instances[name] = {
            "role": inst.role, "engine": inst.engine, "netns": inst.netns,
            "interface": inst.get("interface"),
            "restart_unqualified_after": inst.get("restart_unqualified_after"),
            "stop_flapping": inst.get("stop_flapping"),
        }
    return json.dumps({"version": SETTINGS_VERSION, "fleet": str(fleet.root),
                       "notify": fleet.notify, "instances": instances},
                      indent=1, sort_keys=True) + "\n"


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def parse_settings(text: str) -> Settings:
    """The settings file; anything unreadable means "no settings" (the healer then only
    watches), never a crash of the listener."""
    try:
        data = json.loads(text)
    except ValueError:
        return Settings({})
    if not isinstance(data, dict) or not isinstance(data.get("instances"), dict):
        return Settings({})
    out = {}
    for name, d in data["instances"].items():
        if not isinstance(d, dict) or not isinstance(d.get("role"), str):
            continue
        flap = d.get("stop_flapping")
        stop = None
        if isinstance(flap, dict):
            restarts, within = _positive(flap.get("restarts")), _positive(flap.get("within"))
            if restarts and within:
                stop = StopFlapping(int(restarts), within)
        out[name] = InstanceHealth(
            name, d["role"], str(d.get("engine") or "teredo-engine"),
            d.get("netns") if isinstance(d.get("netns"), str) else None,
            d.get("interface") if isinstance(d.get("interface"), str) else None,
            _positive(d.get("restart_unqualified_after")), stop)
    fleet = data.get("fleet")
    return Settings(out, NotifyTarget.from_json(data.get("notify")),
                    fleet if isinstance(fleet, str) else "")


def load_settings(path: Path) -> Settings:
    try:
        return parse_settings(path.read_text())
    except OSError:
        return Settings({})


def write_mark(histories: Path, name: str, reason: str, now: float) -> None:
    path = mark_path(histories, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"t": now, "reason": reason}) + "\n")


def read_mark(histories: Path, name: str) -> dict[str, Any] | None:
    """The mark, or None; a damaged mark still counts as one (reason unknown)."""
    text = history.read_tail(mark_path(histories, name), 4096)
    if not text:
        return None
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            return data
    except ValueError:
        pass
    return {"t": None, "reason": "stopped by the health check"}


def clear_mark(histories: Path, name: str) -> bool:
    try:
        os.unlink(mark_path(histories, name))
        return True
    except FileNotFoundError:
        return False


def record_action(histories: Path, name: str, action: str, reason: str, now: float) -> None:
    """Append one action to `history/NAME.health.jsonl` (bounded like the state history)."""
    path = actions_path(histories, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"t": now, "action": action, "reason": reason},
                      separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if path.stat().st_size > history.KEEP * 200:
        lines = path.read_text().splitlines(keepends=True)
        write_atomic(path, "".join(lines[-history.KEEP:]))


@dataclass(frozen=True)
class ActionRecord:
    time: float
    action: str
    reason: str

    @property
    def text(self) -> str:
        verb = {RESTART: "restarted", STOP: "stopped"}.get(self.action, self.action)
        return f"{verb} by health check: {self.reason}"


def actions(histories: Path, name: str) -> list[ActionRecord]:
    out = []
    for line in history.read_tail(actions_path(histories, name), 256 * 1024).splitlines():
        try:
            d = json.loads(line) if len(line) <= history.MAX_LINE else None
            if isinstance(d, dict):
                t = float(d["t"])
                if math.isfinite(t):
                    out.append(ActionRecord(t, str(d["action"]), str(d["reason"])))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return out


# -- decisions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """Something the listener must do to supervisord: restart (only pid `pid`) or stop."""

    kind: str
    name: str
    reason: str
    pid: int | None = None


@dataclass(frozen=True)
class Event:
    """Something to notify about (listeners/notify.py); `data` adds kind-specific fields."""

    kind: str
    name: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Probe:
    """What a client's engine said (or the kernel showed) at one tick."""

    pid: int
    started: float  # when supervisord started the process (Unix time)
    qualified: bool
    address: str | None = None
    mapped: str | None = None


@dataclass
class _Tracked:
    state: str | None = None
    restarts: list[float] = field(default_factory=list)  # automatic restarts (times)
    flapping_told: bool = False
    pid: int | None = None
    pid_qualified: bool = False  # this process has been seen qualified
    unqualified_since: float | None = None
    told_qualified: bool | None = None  # the last qualification state notified (None: none)
    address: str | None = None
    mapped: str | None = None
    last_restart: float | None = None  # the healer's own last restart


def _operator_start(from_state: str, before: str | None) -> bool:
    """STARTING from STOPPED or FATAL is an operator's start, unless the state before was a
    live one: then the previous life ended unrecorded (a reboot, a killed supervisord) and
    this is a fresh supervisord's own start (the rule `status` counts by, listeners/history.py)."""
    return from_state in history.OPERATOR_FROM and before not in history.LIVE


class Healer:
    """The rules, fed with supervisord's events and the probes of each tick."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings({})
        self.tracked: dict[str, _Tracked] = {}

    def _t(self, name: str) -> _Tracked:
        return self.tracked.setdefault(name, _Tracked())

    def seed(self, name: str, transitions: list[history.Transition]) -> None:
        """Restart times since the last operator start, from the state history (at start-up:
        a restarted listener must not forget a crash loop in progress)."""
        t = self._t(name)
        for tr in transitions:
            if tr.state == STARTING_NAME:
                if tr.from_state in history.AUTOMATIC_FROM:
                    t.restarts.append(tr.time)
                elif _operator_start(tr.from_state, t.state):
                    t.restarts.clear()
            t.state = tr.state

    def process_state(self, name: str, state: str, from_state: str, now: float,
                      marked: bool = False) -> tuple[list[Action], list[Event], bool]:
        """One PROCESS_STATE event -> (actions, events, clear the mark?)."""
        t = self._t(name)
        before, t.state = t.state, state
        events: list[Event] = []
        clear = False
        if state == STARTING_NAME and from_state in history.AUTOMATIC_FROM:
            t.restarts.append(now)
        elif state == STARTING_NAME and _operator_start(from_state, before):
            t.restarts.clear()  # an operator start: a new count, and the mark goes
            t.flapping_told = False
            clear = marked
        if state == FATAL_NAME:
            events.append(Event(FATAL, name, f"supervisord gave up starting it ({from_state} "
                                              "-> FATAL)", {"state": state, "from": from_state}))
        recent = sum(1 for x in t.restarts if now - history.FLAP_WINDOW <= x <= now + 1)
        if recent >= history.FLAP_RESTARTS and not t.flapping_told:
            t.flapping_told = True
            events.append(Event(FLAPPING, name, f"{recent} restarts by supervisord within "
                                                f"{history.FLAP_WINDOW:g} s",
                                {"restarts": recent, "within": history.FLAP_WINDOW}))
        elif recent < history.FLAP_RESTARTS:
            t.flapping_told = False
        return self.flapping_actions(name, now, marked and not clear), events, clear

    def flapping_actions(self, name: str, now: float, marked: bool) -> list[Action]:
        """A stop when the instance is active and over its `stop_flapping` limit (asked again at
        each tick, so a stop skipped while an operator held the lock is not lost)."""
        inst = self.settings.instances.get(name)
        t = self._t(name)
        if inst is None or inst.stop_flapping is None or marked or t.state not in ACTIVE_NAMES:
            return []
        limit = inst.stop_flapping
        t.restarts = [x for x in t.restarts if now - x <= max(limit.within,
                                                                 history.FLAP_WINDOW)]
        count = sum(1 for x in t.restarts if now - limit.within <= x <= now + 1)
        if count >= limit.restarts:
            return [Action(STOP, name, f"flapping: {count} restarts within "
                                       f"{limit.within:g} s (stop_flapping)")]
        return []

    def probe(self, name: str, p: Probe, now: float) -> tuple[list[Action], list[Event]]:
        """One tick's look at a RUNNING client."""
        inst = self.settings.instances.get(name)
        t = self._t(name)
        events: list[Event] = []
        if p.pid != t.pid:  # a new process: its clock starts when it started
            t.pid, t.pid_qualified = p.pid, False
            t.unqualified_since = None if p.qualified else min(now, p.started)
        if p.qualified:
            t.unqualified_since = None
            t.pid_qualified = True
            if t.told_qualified is False:
                events.append(Event(QUALIFIED, name, f"qualified again as {p.address}",
                                    {"address": p.address, "mapped": p.mapped}))
            t.told_qualified = True
            if t.mapped is not None and p.mapped and p.mapped != t.mapped:
                events.append(Event(MAPPING_CHANGED, name, f"mapped address {t.mapped} -> "
                                                           f"{p.mapped}",
                                    {"previous": t.mapped, "mapped": p.mapped}))
            if t.address is not None and p.address and p.address != t.address:
                events.append(Event(ADDRESS_CHANGED, name, f"Teredo address {t.address} -> "
                                                           f"{p.address}",
                                    {"previous": t.address, "address": p.address}))
            t.mapped = p.mapped or t.mapped
            t.address = p.address or t.address
            return [], events
        if t.unqualified_since is None:
            t.unqualified_since = now
        since = t.unqualified_since
        limit = inst.restart_unqualified_after if inst is not None else None
        grace = min(QUALIFY_GRACE, limit) if limit else QUALIFY_GRACE
        # lost: this very process was qualified before, or a new one has had its chance
        if t.told_qualified is not False and (t.pid_qualified or now - since >= grace):
            t.told_qualified = False
            detail = ("lost its qualification" if t.pid_qualified else
                      f"not qualified {now - since:.0f} s after it started")
            events.append(Event(UNQUALIFIED, name, detail, {"since": since}))
        if limit is None or now - since < limit:
            return [], events
        if t.last_restart is not None and now - t.last_restart < limit:
            return [], events
        t.last_restart = now
        return [Action(RESTART, name, f"unqualified for {now - since:.0f} s", p.pid)], events



# -- what `status` and `show` say -----------------------------------------------------------
RECENT_ACTION = 3600.0  # `status` mentions actions of the last hour; `show` the last one


def status_view(histories: Path, name: str, active: bool, now: float) -> dict[str, Any] | None:
    """The `health` object of `status --json` (None when the healer never acted on it):
    `stopped` (the reason) while the instance is held stopped by the health check, `last`
    the last action ({time, action, reason, text}), `recent` whether it is within the hour.
    A mark of a process that runs again is stale (an operator started it) and not shown."""
    mark = None if active else read_mark(histories, name)
    done = actions(histories, name)
    if mark is None and not done:
        return None
    last = done[-1] if done else None
    return {
        "stopped": mark.get("reason") if mark else None,
        "last": None if last is None else {"time": last.time, "action": last.action,
                                           "reason": last.reason, "text": last.text},
        "recent": last is not None and now - last.time <= RECENT_ACTION,
    }


def status_note(name: str, view: dict[str, Any] | None) -> str | None:
    """One line under the `status` table, or None."""
    if not view:
        return None
    if view.get("stopped"):
        return (f"health check: {name} stopped by health check: {view['stopped']}; it stays "
                "stopped until `miredoctl up` or `miredoctl restart`")
    last = view.get("last")
    if last and view.get("recent"):
        when = time.strftime("%H:%M:%S", time.localtime(last["time"]))
        return f"health check: {name} {last['text']} (at {when})"
    return None
