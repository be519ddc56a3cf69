"""The health check's rules with a fake clock, its files, the inventory fields, and the notifier
(miredoctl/listeners/healthrules.py, notify.py, health.py; miredoctl/notify_settings.py)."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from miredoctl.errors import InventoryError
from miredoctl.inventory import load_fleet
from miredoctl.listeners import healthrules as health
from miredoctl.listeners import history
from miredoctl.listeners.engineprobe import decode_teredo
from miredoctl.listeners.health import Listener
from miredoctl.listeners.notify import Notifier, NotifyTarget, deliver

CLIENT = "role: client\nserver: 203.0.113.10\n"


def settings(**inst: health.InstanceHealth) -> health.Settings:
    return health.Settings(dict(inst))


def client(after: float | None = 60, flap: health.StopFlapping | None = None
           ) -> health.InstanceHealth:
    return health.InstanceHealth("c1", "client", "teredo-engine", None, "teredo", after, flap)


# -- restart_unqualified_after --------------------------------------------------------------
def test_a_client_unqualified_for_n_seconds_is_restarted_once_per_n() -> None:
    h = health.Healer(settings(c1=client(60)))
    assert h.probe("c1", health.Probe(100, 0.0, True, "2001::1", "198.51.100.1:1"), 10) == ([], [])
    actions, events = h.probe("c1", health.Probe(100, 0.0, False), 20)
    assert actions == [] and [e.kind for e in events] == ["unqualified"]
    assert events[0].detail == "lost its qualification"
    assert h.probe("c1", health.Probe(100, 0.0, False), 79)[0] == []
    actions, events = h.probe("c1", health.Probe(100, 0.0, False), 80)
    assert actions == [health.Action("restart", "c1", "unqualified for 60 s", 100)]
    assert events == []  # the loss was told once
    # the same process, still unqualified: not again before another 60 s
    assert h.probe("c1", health.Probe(100, 0.0, False), 100)[0] == []
    assert h.probe("c1", health.Probe(100, 0.0, False), 140)[0][0].kind == "restart"


def test_a_new_process_gets_its_own_clock_from_its_start() -> None:
    h = health.Healer(settings(c1=client(60)))
    h.probe("c1", health.Probe(100, 0.0, False), 50)
    assert h.probe("c1", health.Probe(100, 0.0, False), 61)[0][0].pid == 100
    # restarted at 61: the new pid has not been unqualified for 60 s yet
    assert h.probe("c1", health.Probe(200, 61.0, False), 70) == ([], [])
    assert h.probe("c1", health.Probe(200, 61.0, False), 120)[0] == []
    assert h.probe("c1", health.Probe(200, 61.0, False), 121)[0][0].pid == 200


def test_a_slow_start_is_not_a_loss_and_null_never_restarts() -> None:
    h = health.Healer(settings(c1=client(None)))
    assert h.probe("c1", health.Probe(1, 0.0, False), 5) == ([], [])  # starting: no event
    actions, events = h.probe("c1", health.Probe(1, 0.0, False), health.QUALIFY_GRACE)
    assert actions == [] and events[0].kind == "unqualified"
    assert events[0].detail == "not qualified 30 s after it started"
    assert h.probe("c1", health.Probe(1, 0.0, False), 100000)[0] == []  # null: never


def test_regained_qualification_and_changed_mapping_and_address_are_events() -> None:
    h = health.Healer(settings(c1=client(60)))
    h.probe("c1", health.Probe(1, 0.0, True, "2001::a", "198.51.100.1:1000"), 1)
    h.probe("c1", health.Probe(1, 0.0, False), 2)
    _, events = h.probe("c1", health.Probe(2, 3.0, True, "2001::b", "198.51.100.1:2000"), 4)
    assert [(e.kind, e.data) for e in events] == [
        ("qualified", {"address": "2001::b", "mapped": "198.51.100.1:2000"}),
        ("mapping_changed", {"previous": "198.51.100.1:1000", "mapped": "198.51.100.1:2000"}),
        ("address_changed", {"previous": "2001::a", "address": "2001::b"}),
    ]
    assert h.probe("c1", health.Probe(2, 3.0, True, "2001::b", "198.51.100.1:2000"), 9) == \
        ([], [])


# -- stop_flapping ---------------------------------------------------------------------------
def crash(h: health.Healer, t: float, marked: bool = False) -> tuple[list, list, bool]:
    h.process_state("c1", "EXITED", "RUNNING", t - 0.5, marked)
    return h.process_state("c1", "STARTING", "EXITED", t, marked)


def test_m_restarts_within_the_window_stop_it_and_flapping_is_told_once() -> None:
    h = health.Healer(settings(c1=client(60, health.StopFlapping(4, 100))))
    kinds = []
    for t in (10, 20, 30):
        actions, events, _ = crash(h, t)
        assert actions == []
        kinds += [e.kind for e in events]
    assert kinds == ["flapping"]  # 3 within 300 s: FLAPPING, as `status` says it
    actions, events, _ = crash(h, 40)
    assert actions == [health.Action("stop", "c1", "flapping: 4 restarts within 100 s "
                                                   "(stop_flapping)")]
    assert events == []


def test_old_restarts_fall_out_of_the_window_and_an_operator_start_resets() -> None:
    h = health.Healer(settings(c1=client(60, health.StopFlapping(3, 100))))
    crash(h, 0)
    crash(h, 50)
    assert crash(h, 150)[0] == []  # the one at 0 is out of the 100 s window
    h.process_state("c1", "STOPPED", "STOPPING", 150.5, marked=True)
    actions, _, clear = h.process_state("c1", "STARTING", "STOPPED", 151, marked=True)
    assert actions == [] and clear  # an operator start: the mark goes, the count restarts
    crash(h, 160)
    assert crash(h, 170)[0] == []
    assert crash(h, 180)[0][0].kind == "stop"


def test_a_marked_or_stopped_instance_is_not_stopped_again() -> None:
    h = health.Healer(settings(c1=client(60, health.StopFlapping(1, 100))))
    assert crash(h, 10, marked=True)[0] == []
    h.process_state("c1", "STOPPED", "STOPPING", 11)
    assert h.flapping_actions("c1", 12, marked=False) == []  # not running: nothing to stop


def test_fatal_is_an_event_and_null_stop_flapping_never_stops() -> None:
    h = health.Healer(settings(c1=client(60, None)))
    for t in range(10):
        assert crash(h, t * 10)[0] == []
    _, events, _ = h.process_state("c1", "FATAL", "BACKOFF", 200)
    assert [e.kind for e in events] == ["fatal"]


def test_a_fresh_supervisord_after_an_unrecorded_end_is_not_an_operator_start() -> None:
    h = health.Healer(settings(c1=client(60, health.StopFlapping(3, 1000))))
    h.seed("c1", [history.Transition(1, "STARTING", "STOPPED"),
                  history.Transition(10, "STARTING", "EXITED"),
                  history.Transition(20, "STARTING", "EXITED"),
                  history.Transition(21, "RUNNING", "STARTING")])  # then: a reboot
    actions, _, _ = h.process_state("c1", "STARTING", "STOPPED", 500)
    assert actions == []  # the count carries over, as `status` counts it
    assert crash(h, 510)[0][0].kind == "stop"


def test_seeded_history_keeps_a_crash_loop_in_progress() -> None:
    h = health.Healer(settings(c1=client(60, health.StopFlapping(3, 100))))
    h.seed("c1", [history.Transition(1, "STARTING", "STOPPED"),
                  history.Transition(10, "STARTING", "EXITED"),
                  history.Transition(20, "STARTING", "BACKOFF"),
                  history.Transition(21, "RUNNING", "STARTING")])
    assert crash(h, 30)[0][0].kind == "stop"


# -- files -----------------------------------------------------------------------------------
def test_settings_marks_and_actions_round_trip(tmp_path: Path) -> None:
    (tmp_path / "c1.yaml").write_text(CLIENT + "restart_unqualified_after: 20\n")
    (tmp_path / "c2.yaml").write_text(CLIENT + "restart_unqualified_after: null\n"
                                      "stop_flapping: null\nnetns: ns2\n")
    (tmp_path / "r.yaml").write_text("role: relay\nstop_flapping: {restarts: 2}\nnetns: ns3\n")
    (tmp_path / "defaults.yaml").write_text(
        f"notify:\n  command: [{sys.executable}, -c, pass]\n  timeout: 3\n")
    s = health.parse_settings(health.settings_text(load_fleet(tmp_path)))
    assert s.instances["c1"].restart_unqualified_after == 20
    assert s.instances["c1"].stop_flapping == health.StopFlapping(5, 3600)
    assert s.instances["c2"].restart_unqualified_after is None
    assert s.instances["c2"].stop_flapping is None
    assert s.instances["r"].stop_flapping == health.StopFlapping(2, 3600)
    assert s.instances["r"].restart_unqualified_after is None
    assert s.notify == NotifyTarget((sys.executable, "-c", "pass"), None, 3.0)
    assert health.parse_settings("{not json") == health.Settings({})
    hist = tmp_path / "state" / "history"
    assert health.status_view(hist, "c1", False, 0) is None
    health.write_mark(hist, "c1", "flapping: 5 restarts within 3600 s", 100)
    health.record_action(hist, "c1", "stop", "flapping: 5 restarts within 3600 s", 100)
    view = health.status_view(hist, "c1", active=False, now=200)
    assert view is not None and view["stopped"] == "flapping: 5 restarts within 3600 s"
    assert view["last"]["text"] == "stopped by health check: flapping: 5 restarts within 3600 s"
    assert "stays stopped until" in (health.status_note("c1", view) or "")
    # a running instance's mark is stale (an operator started it): not shown
    assert health.status_view(hist, "c1", active=True, now=200)["stopped"] is None
    assert health.clear_mark(hist, "c1") and not health.clear_mark(hist, "c1")
    assert health.status_note("c1", health.status_view(hist, "c1", False, 100 + 7200)) is None


@pytest.mark.parametrize(("defaults", "instance", "message"), [
    ("", "restart_unqualified_after: 2\n", "c1.yaml:3: restart_unqualified_after must be an "
                                           "integer 5-604800, got 2"),
    ("", "stop_flapping: 5\n", "c1.yaml:3: stop_flapping must be a mapping like {restarts: 5, "
                               "within: 3600} or null, got integer 5"),
    ("", "stop_flapping: {restarts: 0}\n", "c1.yaml:3: stop_flapping restarts must be an "
                                           "integer 1-1000, got 0"),
    ("", "stop_flapping: {every: 3}\n", "c1.yaml:3: stop_flapping has unknown key 'every'"),
    ("notify: {command: sendmail -t}\n", "", "defaults.yaml:1: notify.command must start with "
                                             "an absolute path"),
    ("notify: {command: [/nonexistent/alert]}\n", "", "defaults.yaml:1: notify.command names "
                                                      "no executable file"),
    ("notify: {webhook: 'ftp://x'}\n", "", "defaults.yaml:1: notify.webhook must be an http://"),
    ("notify: {timeout: 5}\n", "", "defaults.yaml:1: notify needs 'command:' or 'webhook:'"),
    ("notify:\n  hook: http://127.0.0.1/\n", "", "defaults.yaml:2: unknown key 'hook' in notify"),
    ("notify: {webhook: 'http://127.0.0.1/', timeout: 0}\n", "",
     "defaults.yaml:1: notify.timeout must be an integer 1-300, got 0"),
])
def test_bad_settings_are_file_line_problems(tmp_path: Path, defaults: str, instance: str,
                                             message: str) -> None:
    (tmp_path / "c1.yaml").write_text(CLIENT + instance)
    if defaults:
        (tmp_path / "defaults.yaml").write_text(defaults)
    with pytest.raises(InventoryError) as err:
        load_fleet(tmp_path)
    lines = [str(p) for p in err.value.problems]
    assert any(message in line for line in lines), lines


def test_restart_unqualified_after_applies_to_clients_only(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("role: relay\nrestart_unqualified_after: 60\n")
    with pytest.raises(InventoryError) as err:
        load_fleet(tmp_path)
    assert "restart_unqualified_after does not apply to a relay" in str(err.value.problems[0])


# -- notifications ---------------------------------------------------------------------------
class _Hook(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        _Hook.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(500 if _Hook.got[-1].get("fail") else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_deliver_runs_the_command_and_posts_the_webhook(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Hook.got = []
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        target = NotifyTarget((sys.executable, "-c", script), url, 5)
        assert deliver(target, {"event": "fatal", "instance": "c1"}) == []
        assert json.loads(out.read_text()) == {"event": "fatal", "instance": "c1"}
        assert _Hook.got == [{"event": "fatal", "instance": "c1"}]
        failures = deliver(NotifyTarget((sys.executable, "-c", "import sys; sys.exit(3)"), url,
                                        5), {"event": "x", "fail": True})
        assert failures[0].endswith("exited 3") and "HTTP 500" in failures[1]
        slow = deliver(NotifyTarget((sys.executable, "-c", "import time; time.sleep(30)"),
                                    None, 0.5), {})
        assert slow == [f"command {sys.executable} did not finish within 0.5 s (killed)"]
    finally:
        server.shutdown()
        server.server_close()
    refused = deliver(NotifyTarget(None, url, 2), {})
    assert refused and refused[0].startswith(f"webhook {url}: ")


def test_the_notifier_keeps_order_never_blocks_and_logs_failures() -> None:
    seen: list[int] = []
    logged: list[str] = []
    gate = threading.Event()

    def send(target: NotifyTarget, event: dict[str, Any]) -> list[str]:
        gate.wait(10)
        seen.append(event["n"])
        return ["boom"] if event["n"] == 2 else []

    n = Notifier(logged.append, limit=3, send=send)
    target = NotifyTarget(None, "http://127.0.0.1/", 1)
    for i in range(6):  # the worker holds #0; #1-#5 wait in a queue of 3: the oldest go
        n.send(target, {"n": i, "event": "e", "instance": "c1"})
        time.sleep(0.05)
    n.send(None, {"n": 99})  # notifications off: nothing
    gate.set()
    n.close()
    assert seen == sorted(seen) and seen[0] == 0 and seen[-3:] == [3, 4, 5]
    assert n.dropped == 2
    assert sum("dropped a waiting e event" in line for line in logged) == 2
    assert not any("boom" in line for line in logged)  # #2 was dropped before it was sent


def test_the_listener_skips_an_action_while_an_operator_holds_the_lock(tmp_path: Path) -> None:
    import fcntl
    import os
    hist = tmp_path / "history"
    hist.mkdir()
    lock = tmp_path / "lock"
    logged: list[str] = []
    listener = Listener(hist, tmp_path / "no.sock", tmp_path, lock,
                        notifier=Notifier(logged.append))
    listener.healer.tracked["c1"] = health._Tracked(last_restart=5.0)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        listener.act([health.Action("restart", "c1", "unqualified for 60 s", 1)], 10)
    finally:
        os.close(fd)
    assert listener.healer.tracked["c1"].last_restart is None  # decided again next tick
    assert not health.actions(hist, "c1")


class _FakeSupervisor:
    """supervisord's XML-RPC as the listener uses it: process info, stop, start."""

    def __init__(self, state: str = "RUNNING", pid: int = 100, fail_stop: bool = False) -> None:
        self.info = {"name": "c1", "statename": state, "pid": pid}
        self.calls: list[tuple[str, ...]] = []
        self.fail_stop = fail_stop

    def getProcessInfo(self, name: str) -> dict[str, Any]:
        return dict(self.info)

    def stopProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("stop", name))
        if self.fail_stop:
            raise OSError("supervisord went away")
        return True

    def startProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("start", name))
        return True


def _listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sup: _FakeSupervisor
              ) -> tuple[Listener, list[dict[str, Any]]]:
    import miredoctl.listeners.health as listener_mod
    monkeypatch.setattr(listener_mod, "rpc", lambda sock: type("P", (), {"supervisor": sup}))
    hist = tmp_path / "history"
    hist.mkdir(exist_ok=True)
    sent: list[dict[str, Any]] = []
    listener = Listener(hist, tmp_path / "sock", tmp_path, tmp_path / "lock",
                        notifier=Notifier(lambda line: None))
    listener.notify = lambda kind, name, detail, now, data=None: sent.append(  # type: ignore
        {"event": kind, "instance": name, "detail": detail})
    return listener, sent


def test_a_restart_is_done_only_to_the_pid_judged(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sup = _FakeSupervisor(pid=200)  # an operator restarted it meanwhile
    listener, sent = _listener(tmp_path, monkeypatch, sup)
    listener.act([health.Action("restart", "c1", "unqualified for 60 s", 100)], 10)
    assert sup.calls == [] and sent == [] and not health.actions(listener.histories, "c1")
    sup.info["pid"] = 100
    listener.act([health.Action("restart", "c1", "unqualified for 60 s", 100)], 11)
    assert sup.calls == [("stop", "c1"), ("start", "c1")]
    assert [a.text for a in health.actions(listener.histories, "c1")] == [
        "restarted by health check: unqualified for 60 s"]
    assert sent == [{"event": "health_action", "instance": "c1",
                     "detail": "restarted by health check: unqualified for 60 s"}]


def test_a_stop_leaves_a_mark_that_only_an_operator_start_clears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sup = _FakeSupervisor(fail_stop=True)
    listener, _ = _listener(tmp_path, monkeypatch, sup)
    stop = health.Action("stop", "c1", "flapping: 5 restarts within 3600 s (stop_flapping)")
    listener.act([stop], 10)  # the stop failed: no mark, decided again at the next tick
    assert health.read_mark(listener.histories, "c1") is None
    sup.fail_stop = False
    listener.act([stop], 11)
    assert health.read_mark(listener.histories, "c1")["reason"] == stop.reason
    assert [c[0] for c in sup.calls] == ["stop", "stop"]  # never a start
    listener.handle("PROCESS_STATE_STOPPED", "processname:c1 groupname:c1 from_state:STOPPING "
                                             "pid:0", 12)
    assert health.read_mark(listener.histories, "c1") is not None  # its own stop: kept
    listener.handle("PROCESS_STATE_STARTING", "processname:c1 groupname:c1 from_state:STOPPED "
                                              "tries:0", 13)
    assert health.read_mark(listener.histories, "c1") is None  # an operator's start


def test_a_miredo_client_is_judged_by_the_teredo_address_on_its_interface(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import miredoctl.listeners.health as listener_mod
    seen: list[list[str]] = []
    answer = {"out": ""}

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, answer["out"], "")

    monkeypatch.setattr(listener_mod.subprocess, "run", run)
    # 2001:0:cb00:710a:... : server 203.0.113.10, mapped 198.51.100.1:50282 (the lab's client)
    teredo = "2001:0:cb00:710a:cc5:3b95:39cc:9bfe"
    answer["out"] = json.dumps([{"ifname": "teredo", "addr_info": [
        {"local": "fe80::ffff:ffff:ffff", "prefixlen": 64}, {"local": teredo, "prefixlen": 32}]}])
    assert listener_mod.teredo_address("ns1", "teredo") == teredo
    assert seen[-1] == ["ip", "-n", "ns1", "-j", "-6", "addr", "show", "dev", "teredo"]
    assert decode_teredo(teredo) == ("203.0.113.10", "198.51.100.1", 50282)
    answer["out"] = json.dumps([{"ifname": "teredo", "addr_info": [
        {"local": "fe80::ffff:ffff:ffff", "prefixlen": 64}]}])
    assert listener_mod.teredo_address(None, "teredo") is None  # up, not qualified
    assert seen[-1][:2] == ["ip", "-j"]
    answer["out"] = ""  # no such interface (ip says so on stderr)
    assert listener_mod.teredo_address("ns1", "teredo") is None
