"""Status rendering: Teredo address decoding, the engine's JSON, tables, logs and the reaper."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from miredoctl import logs
from miredoctl.listeners.reaper import reap
from miredoctl.listeners.timedlog import LogLine, TimedWriter, display_time
from miredoctl.state import StatePaths
from miredoctl.status import (
    InstanceStatus,
    decode_teredo,
    detail,
    engine_view,
    human_bytes,
    human_duration,
    table,
)


def test_decode_teredo_address() -> None:
    # the lab's client1 address from the miredo pcaps: server 203.0.113.10, 198.51.100.1:50092
    assert decode_teredo("2001:0:cb00:710a:c9:3c53:39cc:9bfe") == (
        "203.0.113.10", "198.51.100.1", 50092)
    assert decode_teredo("2001:db8::1") is None
    assert decode_teredo("not an address") is None


def test_engine_view_follows_the_contract_and_rejects_monotonic_times() -> None:
    st = InstanceStatus("c", "client", "teredo-engine", None, True, "RUNNING", pid=5)
    engine_view({"pid": 5, "state": "qualified", "interface": "teredo", "mtu": 1280,
                 "address": "2001:0:cb00:710a:c9:3c53:39cc:9bfe", "server": "203.0.113.10",
                 "mapped": {"ip": "198.51.100.1", "port": 50092}, "bound": ["0.0.0.0:50092"],
                 "peers": {"count": 2, "trusted": 1}, "started": 1764130000.0,
                 "last_qualified": 812.5, "worker_restarts": 1,
                 "counters": {"udp_in_bytes": 2048, "udp_out_bytes": 10,
                              "udp_in_packets": 3, "udp_out_packets": 1}}, st)
    assert st.ready and st.mapped == "198.51.100.1:50092" and st.peers == 2
    assert st.last_qualified is None  # 812.5 is a monotonic clock, not a Unix time
    assert st.worker_restarts == 1 and st.restarts == 0
    row = table([st]).splitlines()[1]
    assert "qualified" in row and "2.0KiB/10B" in row and "198.51.100.1:50092" in row
    assert row.split()[6] == "0+1w"  # RESTARTS: none by supervisord, one engine worker
    text = detail(st, None)
    assert "mapped address: 198.51.100.1:50092" in text
    assert "engine worker restarts: 1" in text
    log = [LogLine(None, "c", "from before stamping"), LogLine(1_764_130_000.0, "c", "up")]
    assert detail(st, None, log).splitlines()[-3:] == [
        "  recent log:", "    from before stamping", f"    {display_time(1_764_130_000.0)} up"]
    # an engine answering with another pid than supervisord's is not the one running now
    engine_view({"pid": 6, "state": "qualified",
                 "address": "2001:0:cb00:710a:c9:3c53:39cc:9bfe"}, st)
    assert st.up and not st.ready


def test_human_units() -> None:
    assert human_duration(3725) == "1:02:05"
    assert human_duration(90061) == "1d 1:01:01"
    assert human_duration(None) == "-"
    assert human_bytes(512) == "512B" and human_bytes(1536) == "1.5KiB"


def test_logs_are_prefixed_and_followed(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    paths.ensure()
    # a state folder from before stamping: the raw logs, in instance order, no times
    paths.log("relay").write_text("one\ntwo\nthree\n")
    paths.log("client1").write_text("a\n")
    out = io.StringIO()
    logs.show(paths, ["client1", "relay"], 2, False, out)
    assert out.getvalue() == "relay   | two\nrelay   | three\n"  # -n 2 of the merged stream
    writer = TimedWriter(paths.timed_logs)
    writer.feed("relay", "four\n", 1_764_130_000.0)
    out = io.StringIO()
    logs.show(paths, ["relay"], 0, True, out, poll=0.01, max_polls=1)
    assert out.getvalue() == ""  # follow starts at the end
    # a line stamped while following shows up, with its time
    def append() -> None:
        time.sleep(0.05)
        writer.feed("relay", "five\n", 1_764_130_001.0)

    t = threading.Thread(target=append)
    t.start()
    logs.show(paths, ["relay"], 0, True, out, poll=0.1, max_polls=5)
    t.join()
    assert out.getvalue() == f"relay | {display_time(1_764_130_001.0)} five\n"


def test_reaper_kills_the_exited_programs_group() -> None:
    # a process group whose leader is gone but whose member lives on, like miredo's worker
    leader = subprocess.Popen([sys.executable, "-c",
                               "import os, subprocess, sys, time; os.setpgrp();"
                               "subprocess.Popen([sys.executable, '-c', 'import time; "
                               "time.sleep(60)']); print(os.getpid(), flush=True)"],
                              stdout=subprocess.PIPE, text=True)
    pgid = int(leader.stdout.readline())
    leader.wait(timeout=10)
    members = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid]
    assert members, "the orphaned member should still run"
    assert reap(f"processname:relay groupname:relay from_state:RUNNING expected:0 "
                f"pid:{pgid}") == f"relay: killed leftover processes of group {pgid}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(int(p)) for p in members):
        time.sleep(0.05)
    assert not any(_alive(int(p)) for p in members)
    assert reap("processname:relay groupname:relay") == "relay: no pid in event"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
