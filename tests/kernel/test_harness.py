"""The kernel-test harness itself: ping parsing, Teredo address decoding, config text,
command templates, and (with root) daemons stopped by PID with the SIGKILL fallback."""

from __future__ import annotations

import time

import pytest

from teredolab.topology import LabSpec
from tests.kernel.harness import (
    DEBIAN,
    OURS,
    Daemon,
    HarnessError,
    Implementation,
    client_conf,
    decode_teredo,
    engine_command,
    implementation,
    parse_ping,
    ping,
    relay_conf,
    server_conf,
    wait_for_teredo_address,
)

PING_OK = """PING 2001:db8:1::100(2001:db8:1::100) 56 data bytes
64 bytes from 2001:db8:1::100: icmp_seq=1 ttl=64 time=0.547 ms

--- 2001:db8:1::100 ping statistics ---
5 packets transmitted, 4 received, +1 errors, 20% packet loss, time 805ms
rtt min/avg/max/mdev = 0.409/0.548/0.980/0.218 ms
"""
PING_NONE = """--- 2001:0:cb00:710a::1 ping statistics ---
5 packets transmitted, 0 received, 100% packet loss, time 4081ms
"""


def test_parse_ping_partial_and_none():
    r = parse_ping(PING_OK)
    assert (r.sent, r.received, r.min, r.avg, r.max) == (5, 4, 0.409, 0.548, 0.980)
    assert r.verdict == "PARTIAL"
    n = parse_ping(PING_NONE)
    assert (n.sent, n.received, n.avg, n.verdict) == (5, 0, None, "FAIL")
    e = parse_ping("ping: connect: Network is unreachable\n", count=3)
    assert (e.sent, e.received, e.verdict) == (3, 0, "FAIL")
    assert e.error == "ping: connect: Network is unreachable"


def test_decode_teredo_matches_rfc4380_example():
    # RFC 4380 section 4: server 65.54.227.120, cone flag, mapped 192.0.2.45:40000
    p = decode_teredo("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert (p.server, p.flags, p.port, p.client) == ("65.54.227.120", 0x8000, 40000,
                                                     "192.0.2.45")


def test_configs_use_the_lab_plan():
    spec = LabSpec(prefix="g-", relay_port=3545)
    assert "ServerBindAddress 203.0.113.10\nServerBindAddress2 203.0.113.11\n" in server_conf(spec)
    r = relay_conf(spec)
    assert "RelayType cone\n" in r and "BindAddress 203.0.113.20\n" in r
    assert "BindPort 3545\n" in r
    assert "BindPort" not in relay_conf(spec.replace(relay_port=0))
    c = client_conf(spec)
    assert "RelayType client\n" in c and "ServerAddress 203.0.113.10\n" in c
    assert "remlab" not in c  # never Debian's default public server


def test_command_lines_are_pluggable(tmp_path):
    conf, pid = tmp_path / "c.conf", tmp_path / "c.pid"
    assert DEBIAN.argv("server", conf, pid) == [
        "/usr/sbin/miredo-server", "-f", "-c", str(conf), "-p", str(pid), "-u", "miredo-server"]
    assert DEBIAN.argv("client", conf, pid)[-2:] == ["-u", "miredo"]
    ours = OURS.argv("relay", conf, pid)
    assert ours == [*engine_command(), "-f", "-c", str(conf), "-p", str(pid),
                    "--status-socket", str(tmp_path / "c.sock")]
    assert engine_command()[0].endswith("/teredo-engine")  # as miredoctl runs it (make venv)
    custom = implementation("cmd:/opt/x --conf {conf} --pid={pid}")
    assert custom.argv("client", conf, pid) == ["/opt/x", "--conf", str(conf), f"--pid={pid}"]
    with pytest.raises(HarnessError, match="unknown implementation"):
        implementation("windows")


@pytest.mark.kernel
def test_daemon_stop_by_pid_and_sigkill_fallback(lab_factory, run_dir):
    lab = lab_factory(check=False, with_client2=False)
    polite = Implementation("sleep", {"client": ("sleep", "300")})
    stubborn = Implementation("stubborn", {"client": (
        "sh", "-c", "trap '' TERM; echo ignoring TERM; exec sleep 300")})
    a = Daemon(lab, "cli", "client", run_dir / "a.conf", run_dir, polite, name="a").start()
    b = Daemon(lab, "cli", "client", run_dir / "b.conf", run_dir, stubborn, name="b").start()
    deadline = time.monotonic() + 5  # SIGTERM before the trap is set would simply kill it
    while "ignoring TERM" not in b.log_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.alive() and b.alive()
    assert a.stop() == -15
    assert b.stop(grace=0.5) == -9
    assert lab.status()["roles"]["cli"]["pids"] == []


@pytest.mark.kernel
def test_dead_daemon_and_no_route_are_reported(lab_factory, run_dir):
    lab = lab_factory(check=False, with_client2=False)
    dying = Implementation("dying", {"client": ("sh", "-c", "echo bad config >&2; exit 1")})
    d = Daemon(lab, "cli", "client", run_dir / "d.conf", run_dir, dying).start()
    with pytest.raises(HarnessError, match="exited with status 1: bad config"):
        wait_for_teredo_address(lab, "cli", "teredo", 5.0, daemon=d)
    # no Teredo tunnel, no IPv6 route: a FAIL row with ping's own reason, not a crash
    r = ping(lab, "cli", lab.spec.v6_host, count=2, interval=0.2, wait=1)
    assert r.verdict == "FAIL" and "unreachable" in r.error.lower()
