"""Health checks and notifications end to end: the lab, a real supervisord, real engines.

* a client whose server is blackholed (an nftables drop inside its lab namespace) is restarted
  by the `_healer` listener once it has been unqualified for `restart_unqualified_after` (10 s
  here), and qualifies again once the drop is removed;
* an engine in a crash loop (its config on disk made unreadable for it, then killed) is
  stopped after `stop_flapping.restarts` automatic restarts, reported, and stays stopped until
  `up`;
* a notify command that records its stdin and a webhook served on 127.0.0.1 receive the same
  events, in the order they happened.

One lab and one fleet for the module (the fleet's start is most of the cost); the tests run in
file order and each leaves the fleet running and healthy for the next.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from teredolab import netns
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel.conftest import _missing_tools, unique_prefix
from tests.kernel.test_miredoctl_fleet import ENGINE_ROLES, Ctl, make_fleet

pytestmark = pytest.mark.kernel

NFT_TABLE = "miredoctl_health_test"
RESTART_AFTER = 10
FLAP_RESTARTS = 3


class Hook(http.server.BaseHTTPRequestHandler):
    """Records every POSTed JSON body, in arrival order."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Receivers:
    """The two ends of the notifications: a file the command appends to, and the webhook."""

    def __init__(self, folder: Path) -> None:
        self.record = folder / "notified.jsonl"
        self.command = folder / "record-stdin"
        self.command.write_text(f"#!{sys.executable}\n"
                                "import sys\n"
                                f"with open({str(self.record)!r}, 'a') as fh:\n"
                                "    fh.write(sys.stdin.read().strip() + '\\n')\n")
        self.command.chmod(0o755)
        Hook.received = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def from_command(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def from_webhook(self) -> list[dict[str, Any]]:
        return list(Hook.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ctl, Receivers]]:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("health")
    lab = NetnsLab(LabSpec(prefix=unique_prefix()))
    receivers = Receivers(tmp)
    ctl = None
    try:
        lab.up()
        fleet_dir = make_fleet(lab, tmp / "fleet", overrides={
            "client1": f"restart_unqualified_after: {RESTART_AFTER}\n",
            "client2": f"stop_flapping: {{restarts: {FLAP_RESTARTS}, within: 120}}\n",
        })
        with (fleet_dir / "defaults.yaml").open("a") as fh:
            fh.write(f"notify:\n  command: [{receivers.command}]\n  webhook: {receivers.url}\n"
                     "  timeout: 5\n")
        ctl = Ctl(lab, fleet_dir, tmp / "state")
        ctl.run("up")
        ctl.run("wait", "--timeout", "60")
        yield ctl, receivers
    finally:
        _unblock(lab)
        if ctl is not None:
            ctl.run("down", expect=None)
            pidfile = ctl.state / "supervisord.pid"
            if pidfile.exists():  # down failed: stop the supervisord this test started
                try:
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        left = {r: netns.pids(lab.ns(r)) for r in ENGINE_ROLES if netns.pids(lab.ns(r))}
        if left:
            netns.stop_pids([p for pids in left.values() for p in pids])
        receivers.close()
        lab.down()
        assert not left, f"processes left in lab namespaces after down: {left}"


def _nft(lab: NetnsLab, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", lab.ns("cli"), "nft", "-f", "-"],
                          input=script, text=True, capture_output=True, check=check)


def _block(lab: NetnsLab) -> None:
    """Drop everything client1 sends to a Teredo server (UDP 3544), inside its namespace."""
    _nft(lab, f"table inet {NFT_TABLE} {{\n chain out {{\n  type filter hook output priority 0;"
              "\n  udp dport 3544 drop\n }\n}\n")


def _unblock(lab: NetnsLab) -> None:
    _nft(lab, f"delete table inet {NFT_TABLE}\n", check=False)


def _events(items: list[dict[str, Any]], name: str) -> list[str]:
    return [e["event"] for e in items if e.get("instance") == name]


def _in_order(seq: list[str], wanted: list[str]) -> bool:
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


def _health(ctl: Ctl, name: str) -> dict[str, Any]:
    return ctl.status(name)[name].get("health") or {}


def test_a_blackholed_client_is_restarted_and_qualifies_again(fleet) -> None:
    ctl, receivers = fleet
    before = ctl.status("client1")["client1"]
    assert before["tunnel_state"] == "qualified" and before["health"] is None
    _block(ctl.lab)
    try:
        # the engine notices the loss at its next refresh (up to 30 s, then 3 x 4 s), the
        # healer restarts it RESTART_AFTER s later
        last = ctl.wait(lambda: (_health(ctl, "client1").get("last") or None),
                        "client1 restarted by the health check", 120)
        assert last["action"] == "restart"
        assert last["text"].startswith("restarted by health check: unqualified for ")
        seconds = int(last["reason"].split()[2])
        assert seconds >= RESTART_AFTER
        row = ctl.wait(lambda: (r := ctl.status("client1")["client1"])["pid"] not in
                       (None, before["pid"]) and r, "client1 running with a new pid", 30)
        assert row["restarts"] == 0  # a health restart is a stop and a start, not a crash
        shown = ctl.run("show", "client1", expect=None).stdout
        assert "health check: restarted by health check: unqualified for" in shown
        table = ctl.run("status", expect=None).stdout
        assert "health check: client1 restarted by health check: unqualified for" in table
        log = (ctl.state / "logs" / "_healer.log").read_text()
        assert "client1: restarted by health check: unqualified for" in log
    finally:
        _unblock(ctl.lab)
    ctl.run("wait", "client1", "--timeout", "60")
    assert ctl.status("client1")["client1"]["tunnel_state"] == "qualified"
    # notifications: lost, the action, regained; the same events at both ends, in order
    wanted = ["unqualified", "health_action", "qualified"]
    ctl.wait(lambda: _in_order(_events(receivers.from_command(), "client1"), wanted)
             and _in_order(_events(receivers.from_webhook(), "client1"), wanted),
             "notifications of client1's loss, restart and return", 30)
    by_command = [(e["event"], e["instance"], e["time"]) for e in receivers.from_command()]
    by_webhook = [(e["event"], e["instance"], e["time"]) for e in receivers.from_webhook()]
    n = min(len(by_command), len(by_webhook))
    assert by_command[:n] == by_webhook[:n]
    assert [t for _, _, t in by_command] == sorted(t for _, _, t in by_command)
    action = next(e for e in receivers.from_command()
                  if e["instance"] == "client1" and e["event"] == "health_action")
    assert action["action"] == "restart" and action["role"] == "client"
    assert action["detail"].startswith("restarted by health check: unqualified for ")
    assert not any(e["instance"] != "client1" for e in receivers.from_command())


def test_a_crash_loop_is_stopped_reported_and_stays_stopped(fleet) -> None:
    ctl, receivers = fleet
    conf = ctl.state / "configs" / "client2.conf"
    good = conf.read_text()
    pid = ctl.status("client2")["client2"]["pid"]
    conf.write_text("this engine cannot start\n")  # every restart now exits at once
    os.kill(pid, signal.SIGKILL)
    row = ctl.wait(lambda: (r := ctl.status("client2")["client2"])["state"] == "STOPPED"
                   and (r.get("health") or {}).get("stopped") and r,
                   "client2 stopped by the health check", 60)
    assert row["health"]["stopped"] == f"flapping: {FLAP_RESTARTS} restarts within 120 s " \
                                       "(stop_flapping)"
    assert row["health"]["last"]["action"] == "stop"
    assert (ctl.state / "health" / "client2.stopped").exists()
    # it stays stopped: supervisord does not start it, the healer does not, ticks pass
    for _ in range(12):
        assert ctl.status("client2")["client2"]["state"] == "STOPPED"
        time.sleep(1)
    proc = ctl.run("status", expect=3)
    assert "health check: client2 stopped by health check: flapping: " in proc.stdout
    shown = ctl.run("show", "client2", expect=3).stdout
    assert "stopped by health check: flapping" in shown and "until `up` or `restart`" in shown
    ctl.wait(lambda: _in_order(_events(receivers.from_webhook(), "client2"),
                               ["flapping", "health_action"])
             and _in_order(_events(receivers.from_command(), "client2"),
                           ["flapping", "health_action"]),
             "notifications of client2's crash loop and stop", 30)
    stop = [e for e in receivers.from_webhook()
            if e["instance"] == "client2" and e["event"] == "health_action"]
    assert [e["action"] for e in stop] == ["stop"]
    # an operator's `up` writes the good config back and starts it: the mark is gone
    assert conf.read_text() != good
    ctl.run("up")
    ctl.run("wait", "--timeout", "60")
    ctl.wait(lambda: not (ctl.state / "health" / "client2.stopped").exists(),
             "the health check's mark cleared by the operator start", 15)
    row = ctl.status("client2")["client2"]
    assert row["state"] == "RUNNING" and not (row["health"] or {}).get("stopped")
