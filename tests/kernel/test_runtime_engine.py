"""The real engine process (`python -m engine`) in a private network namespace.

Each test gets its own namespace (unique name, removed even on failure) with one veth pair
carrying the documentation addresses 198.51.100.10 and .11, and starts the engine exactly as
supervisord or an operator would.  What is checked is what the kernel shows: bound sockets,
the TUN link with its addresses, routes and MTU (read back with pyroute2), the worker's
/proc status, the files left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from engine.runtime.status_server import query
from tests.kernel.harness import venv_python, wait_for

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
PY = venv_python()  # the venv of this checkout, or the running interpreter (a worktree)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PRIMARY, SECONDARY = "198.51.100.10", "198.51.100.11"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def ns_pids(ns: str) -> list[int]:
    return [int(p) for p in sh("ip", "netns", "pids", ns).split()]


@pytest.fixture
def ns():
    if os.geteuid() != 0:
        pytest.skip("kernel test: needs root")
    name = f"h6rt-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        for cmd in (
            "ip link set lo up",
            "ip link add v0 type veth peer name v1",
            f"ip addr add {PRIMARY}/24 dev v0",
            f"ip addr add {SECONDARY}/24 dev v0",
            "ip link set v0 up",
            "ip link set v1 up",
        ):
            sh("ip", "netns", "exec", name, *cmd.split())
        yield name
    finally:
        for pid in ns_pids(name):  # only our engines live in this namespace
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


class Engine:
    """One engine process started in `ns`, with its own pid file, socket and log."""

    def __init__(self, ns: str, d: Path, name: str, conf: str, *extra: str, fg: bool = True):
        self.ns, self.dir, self.name = ns, d, name
        self.conf = d / f"{name}.conf"
        self.conf.write_text(conf)
        self.pidfile = d / f"{name}.pid"
        self.sock = str(d / f"{name}.sock")
        self.log = d / f"{name}.log"
        argv = ["ip", "netns", "exec", ns, PY, "-m", "engine"]
        argv += ["-f"] if fg else []
        argv += ["-c", str(self.conf), "-p", str(self.pidfile), "--status-socket", self.sock]
        argv += list(extra)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV)

    def status(self) -> dict:
        return query(self.sock)

    def try_status(self) -> dict | None:
        try:
            return self.status()
        except (OSError, ValueError):
            return None

    def ready(self) -> dict:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}: {self.text()}")
            st = self.try_status()
            return st if st and st.get("worker_pid") else None

        return wait_for(up, f"{self.name} status socket")

    def text(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.proc.wait(20)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


SERVER_CONF = f"ServerBindAddress {PRIMARY}\nServerBindAddress2 {SECONDARY}\n"


def test_server_binds_both_addresses_worker_unprivileged_term_cleans(ns, tmp_path):
    e = Engine(ns, tmp_path, "srv", SERVER_CONF)
    st = e.ready()
    assert st["role"] == "server" and st["pid"] == e.proc.pid
    assert sorted(st["bound"]) == [f"{PRIMARY}:3544", f"{SECONDARY}:3544"]
    ss = sh("ip", "netns", "exec", ns, "ss", "-uanpH")
    worker = st["worker_pid"]
    for addr in (PRIMARY, SECONDARY):
        line = next(x for x in ss.splitlines() if f"{addr}:3544" in x)
        assert f"pid={worker}," in line
    try:  # the default user, or nobody when the host has no `teredo` (docs/security.md)
        default = pwd.getpwnam("teredo").pw_uid
    except KeyError:
        default = pwd.getpwnam("nobody").pw_uid
    w = proc_status(worker)
    assert w["Uid"].split() == [str(default)] * 4
    assert st["user"] == pwd.getpwuid(default).pw_name
    assert ("user 'teredo' does not exist" in e.text()) == (st["user"] == "nobody")
    assert w["Groups"] == ""
    assert int(w["CapEff"], 16) == 0 and int(w["CapPrm"], 16) == 0
    parent = proc_status(e.proc.pid)
    assert parent["Uid"].split()[0] == "0"
    # issue 9 flaw 6: the parent keeps 7 capabilities, not root's full set, bounding set too
    # (numbers of linux/capability.h, spelled out so the test does not trust the engine)
    kept = sum(1 << n for n in (5, 6, 7, 10, 12, 13, 18))
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(parent[key], 16) == kept, (key, parent[key])
    assert int(parent["CapInh"], 16) == 0
    assert e.pidfile.read_text() == str(e.proc.pid)
    e.signal(signal.SIGUSR1)  # ignored, unlike miredo
    e.signal(signal.SIGUSR2)
    assert e.status()["worker_pid"] == worker
    assert e.stop() == 0
    assert not e.pidfile.exists() and not os.path.exists(e.sock)
    assert ns_pids(ns) == []
    assert "exiting on signal SIGTERM" in e.text()


def _link(ns: str, name: str):
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.link("get", index=idx[0])[0]
        addrs = sorted(
            (a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=idx[0])
        )
        routes = sorted(
            (r.get("dst") or "::", r["dst_len"], r.get("priority"))
            for r in ipr.get_routes(family=socket.AF_INET6, table=254)
            if r.get("oif") == idx[0]
        )
        return {
            "index": idx[0],
            "mtu": link.get("mtu"),
            "up": bool(link["flags"] & 1),
            "addrs": addrs,
            "routes": routes,
        }


RELAY_CONF = "RelayType cone\nInterfaceName h6relay\nBindPort 3600\nInterfaceMTU 1400\n"


def test_relay_interface_hup_respawn_and_term(ns, tmp_path):
    e = Engine(ns, tmp_path, "rly", RELAY_CONF)
    st = e.ready()
    link = _link(ns, "h6relay")
    assert link["mtu"] == 1400 and link["up"]
    assert link["addrs"] == [("fe80::ffff:ffff:ffff", 64)]
    assert ("2001::", 32, 1024) in link["routes"]
    redirects = sh("ip", "netns", "exec", ns, "cat",
                   "/proc/sys/net/ipv6/conf/h6relay/accept_redirects")
    assert redirects.strip() == "0"
    assert st["interface"] == "h6relay" and st["bound"] == ["0.0.0.0:3600"]

    # HUP with a change the worker applies in place: same worker, same interface
    e.conf.write_text(RELAY_CONF + "SyslogFacility local3\n")
    e.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded in place" in e.text(), "in-place reload")
    assert e.status()["worker_pid"] == st["worker_pid"]
    assert _link(ns, "h6relay") == link

    # HUP with a broken file: logged as file:line, the old config keeps running
    e.conf.write_text(RELAY_CONF + "Prefix ff02::\n")
    e.signal(signal.SIGHUP)
    wait_for(lambda: "the running one stays" in e.text(), "rejected reload")
    assert f"{e.conf}:5:" in e.text()
    assert e.status()["worker_pid"] == st["worker_pid"]

    # HUP with a superfluous directive (miredo: a warning): logged, applied in place
    e.conf.write_text(RELAY_CONF + "SyslogFacility local3\nServerAddress 203.0.113.10\n")
    e.signal(signal.SIGHUP)
    wait_for(lambda: f"{e.conf}:6: warning: superfluous directive ServerAddress" in e.text(),
             "superfluous warning on reload")
    assert e.status()["worker_pid"] == st["worker_pid"]

    # HUP with a new port: a new worker on new sockets, the interface stays
    e.conf.write_text(RELAY_CONF.replace("3600", "3601"))
    e.signal(signal.SIGHUP)
    st2 = wait_for(
        lambda: (s := e.try_status()) and s["bound"] == ["0.0.0.0:3601"] and s, "new worker"
    )
    assert st2["worker_pid"] != st["worker_pid"]
    assert _link(ns, "h6relay")["index"] == link["index"]
    # the collector: off during the start-up only, on in the first worker and in one forked
    # by a parent that has been running since (engine.launch, engine.runtime.parent)
    for state in (st, st2):
        assert state["gc"]["enabled"] is True
        assert state["gc"]["frozen"] > 1000
        assert len(state["gc"]["collections"]) == 3

    # a worker that dies is respawned (after 1 s), the parent and interface stay
    os.kill(st2["worker_pid"], signal.SIGKILL)
    st3 = wait_for(
        lambda: (s := e.try_status()) and s["worker_pid"] != st2["worker_pid"] and s,
        "respawned worker",
    )
    assert st3["pid"] == e.proc.pid
    assert "exited unexpectedly (killed by signal SIGKILL)" in e.text()
    assert _link(ns, "h6relay")["index"] == link["index"]

    assert e.stop() == 0
    assert _link(ns, "h6relay") is None
    with IPRoute(netns=ns, flags=0) as ipr:
        dsts = [r.get("dst") for r in ipr.get_routes(family=socket.AF_INET6, table=254)]
    assert "2001::" not in dsts
    assert not e.pidfile.exists() and not os.path.exists(e.sock)
    assert ns_pids(ns) == []


def test_a_relay_in_a_crowded_route_table_freezes_no_garbage(ns, tmp_path):
    """A relay's set-up decodes the namespace's IPv6 routes (to choose its metric) with
    pyroute2, whose message objects form reference cycles.  With the collector off during the
    set-up (it is, for a client's timed start), they piled up and were frozen with the heap
    at the fork: 13,400 objects and 2.3 MiB with 100 relays in the namespace.  The objects
    the worker has frozen must not grow with the routes the namespace holds."""
    def frozen() -> int:
        e = Engine(ns, tmp_path, "rly", RELAY_CONF)
        try:
            return e.ready()["gc"]["frozen"]
        finally:
            assert e.stop() == 0

    quiet = frozen()
    batch = tmp_path / "routes.batch"  # on the fixture's veth end, up and otherwise unused
    batch.write_text("".join(f"route add 2001:db8:ff:{n:x}::/64 dev v1\n"
                             for n in range(400)))
    sh("ip", "-6", "-n", ns, "-batch", str(batch))
    crowded = frozen()
    assert crowded - quiet < 2000, (quiet, crowded)


def test_second_instance_with_same_pidfile_exits_1(ns, tmp_path):
    a = Engine(ns, tmp_path, "a", SERVER_CONF)
    a.ready()
    conf = tmp_path / "b.conf"
    conf.write_text(RELAY_CONF)
    argv = ["ip", "netns", "exec", ns, PY, "-m", "engine", "-f", "-c", str(conf),
            "-p", str(a.pidfile), "--status-socket", str(tmp_path / "b.sock")]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=30)
    assert r.returncode == 1
    msg = f"another instance is running (pid {a.proc.pid}, pid file {a.pidfile})"
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert a.pidfile.read_text() == str(a.proc.pid)  # untouched
    assert a.try_status() is not None
    assert a.stop() == 0


def test_port_in_use_is_one_clear_line(ns, tmp_path):
    a = Engine(ns, tmp_path, "a", SERVER_CONF)
    a.ready()
    b = Engine(ns, tmp_path, "b", SERVER_CONF)
    assert b.proc.wait(30) == 1
    lines = b.text().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot bind UDP {PRIMARY}:3544: address already in use" in lines[0]
    assert not b.pidfile.exists() and not os.path.exists(b.sock)
    assert a.stop() == 0


def test_daemon_mode_reports_and_detaches(ns, tmp_path):
    e = Engine(ns, tmp_path, "d", RELAY_CONF, fg=False)
    assert e.proc.wait(30) == 0  # the launcher exits with the daemon's status byte
    daemon_pid = int(wait_for(lambda: e.pidfile.exists() and e.pidfile.read_text(), "pid"))
    assert daemon_pid != e.proc.pid
    st = e.status()
    assert st["pid"] == daemon_pid and _link(ns, "h6relay") is not None
    os.kill(daemon_pid, signal.SIGTERM)
    wait_for(lambda: not e.pidfile.exists() and ns_pids(ns) == [], "daemon exit")
    assert _link(ns, "h6relay") is None


def test_daemon_mode_failure_is_exit_1(ns, tmp_path):
    a = Engine(ns, tmp_path, "a", SERVER_CONF)
    a.ready()
    b = Engine(ns, tmp_path, "b", SERVER_CONF, fg=False)
    assert b.proc.wait(30) == 1
    assert "cannot bind UDP" in b.text()
    assert a.stop() == 0


def test_chrooted_worker(ns, tmp_path):
    jail = tmp_path / "jail"
    jail.mkdir()
    e = Engine(ns, tmp_path, "c", SERVER_CONF, "-t", str(jail))
    st = e.ready()
    assert os.readlink(f"/proc/{st['worker_pid']}/root") == str(jail)
    assert json.dumps(e.status())  # still served from inside the chroot
    assert e.stop() == 0


CLIENT_CONF = (
    f"RelayType client\nServerAddress {PRIMARY}\nInterfaceName h6cli\n"
    "BindAddress 198.51.100.20\nLocalDiscovery disabled\n"
)


def test_client_qualifies_configures_tun_survives_hup_and_cleans_up(ns, tmp_path):
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", "198.51.100.20/24", "dev", "v1")
    srv = Engine(ns, tmp_path, "srv", SERVER_CONF)
    srv.ready()
    cli = Engine(ns, tmp_path, "cli", CLIENT_CONF)
    cli.ready()
    st = wait_for(
        lambda: (s := cli.try_status()) and s.get("state") == "qualified" and s, "qualified"
    )
    addr = st["address"]
    assert addr.startswith("2001:0:c633:640a:")  # prefix + server 198.51.100.10
    assert st["mapped"] == {"ip": "198.51.100.20", "port": int(st["bound"][0].split(":")[1])}
    assert abs(st["last_qualified"] - time.time()) < 3600  # wall clock, not monotonic
    link = wait_for(lambda: (lk := _link(ns, "h6cli")) and len(lk["addrs"]) == 2 and lk,
                    "client addresses")
    assert link["up"] and link["mtu"] == 1280
    assert link["addrs"] == sorted([(addr, 32), ("fe80::ffff:ffff:ffff", 64)])
    assert ("::", 0, 1029) in link["routes"]  # ::/0 metric 1029, the last resort

    # HUP with a change applied in place: same worker, same Teredo address, same link
    cli.conf.write_text(CLIENT_CONF + "SyslogFacility local4\n")
    cli.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded in place" in cli.text(), "in-place reload")
    st2 = cli.status()
    assert st2["worker_pid"] == st["worker_pid"] and st2["address"] == addr
    assert _link(ns, "h6cli") == link

    # the host's IPv4 changes: the parent sees it over netlink and the worker re-qualifies
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", "198.51.100.30/24", "dev", "v1")
    wait_for(lambda: "host network changed (IPv4 address 198.51.100.30 added" in cli.text(),
             "netlink kick")
    wait_for(lambda: (s := cli.try_status()) and s.get("state") == "qualified", "requalified")

    assert cli.stop() == 0
    assert _link(ns, "h6cli") is None
    with IPRoute(netns=ns, flags=0) as ipr:
        default6 = [r for r in ipr.get_routes(family=socket.AF_INET6, table=254)
                    if r["dst_len"] == 0]
    assert default6 == []
    assert not cli.pidfile.exists() and not os.path.exists(cli.sock)
    assert srv.stop() == 0
    assert ns_pids(ns) == []


def test_status_socket_survives_idle_and_slow_loris_clients(ns, tmp_path):
    """Issue 9 flaw 8: 32 idle connections and 8 slow-loris ones (a byte every 0.3 s, never
    a newline) used to lock every later client out; a fresh `status` must be answered."""
    e = Engine(ns, tmp_path, "rly", RELAY_CONF)
    e.ready()
    held: list[socket.socket] = []
    stop = False

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(e.sock)
        held.append(s)
        return s

    slow = [connect() for _ in range(8)]

    def trickle() -> None:
        while not stop:
            for s in slow:
                try:
                    s.send(b"s")
                except OSError:
                    pass
            time.sleep(0.3)

    import threading

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        for _ in range(32):
            connect()
        for _ in range(3):  # answered at once, again and again, while the abuse goes on
            st = query(e.sock, timeout=5)
            assert st["worker_pid"] and st["status_socket"]["evicted"] >= 1
        # the idle and slow ones are cut after the request timeout (2 s)
        wait_for(lambda: e.status()["status_socket"]["timeouts"] >= 1, "idle clients cut")
    finally:
        stop = True
        t.join(5)
        for s in held:
            s.close()
    assert e.stop() == 0


def test_frozen_worker_is_reported_then_restarted_by_the_watchdog(ns, tmp_path):
    """Issue 9 flaw 7: a SIGSTOPped worker used to look healthy forever (the status socket
    timed out, the parent saw nothing).  Now the parent answers the status socket with
    ``"worker": "unresponsive"`` and restarts the worker after `WorkerWatchdog` seconds."""
    e = Engine(ns, tmp_path, "rly", RELAY_CONF + "WorkerWatchdog 5\n")
    st = e.ready()
    old = st["worker_pid"]
    assert st["worker"] == "running"
    os.kill(old, signal.SIGSTOP)
    try:
        frozen = wait_for(
            lambda: (s := e.try_status()) and s.get("worker") == "unresponsive" and s,
            "the parent reports the frozen worker", timeout=30,
        )
        assert frozen["worker_pid"] == old and frozen["pid"] == e.proc.pid
        assert frozen["role"] == "relay" and frozen["worker_watchdog"] == 5
        assert frozen["state"] is None and frozen["worker_silent"] >= 3
        assert "error" in query(e.sock, "peers")
        new = wait_for(
            lambda: (s := e.try_status()) and s.get("worker") == "running"
            and s["worker_pid"] != old and s,
            "a new worker after the watchdog", timeout=30,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
    assert new["worker_restarts"] == st["worker_restarts"] + 1
    assert not os.path.exists(f"/proc/{old}")  # killed and reaped
    text = e.text()
    assert f"worker {old} unresponsive: no heartbeat for" in text
    assert f"worker {old} unresponsive for" in text and "(WorkerWatchdog 5); killing it" in text
    assert _link(ns, "h6relay")["index"] is not None
    assert e.stop() == 0


def _udp3544(ns: str) -> list[str]:
    return [x for x in sh("ip", "netns", "exec", ns, "ss", "-ulnpH").splitlines()
            if ":3544 " in x]


def test_client_opens_udp_3544_only_while_an_interface_qualifies_for_discovery(ns, tmp_path):
    """Issue 9 flaw 4: with local discovery on and no interface that qualifies (here only the
    documentation addresses of v0, which count as global under `LocalDiscovery enabled`), the
    client used to listen on UDP 3544 anyway.  Now 3544 opens when a private address
    appears on a multicast link and closes when it goes."""
    conf = (f"RelayType client\nServerAddress {PRIMARY}\nInterfaceName h6dsc\n"
            "LocalDiscovery enabled\n")
    e = Engine(ns, tmp_path, "cli", conf)
    st = e.ready()
    wait_for(lambda: "no interface qualifies; UDP 3544 stays closed" in e.text(),
             "the first discovery listing")
    assert _udp3544(ns) == []
    assert all(not b.endswith(":3544") for b in e.status()["bound"])

    sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.44.0.1/24", "dev", "v1")
    wait_for(lambda: "local discovery on v1: UDP 3544 opened" in e.text(), "3544 opened")
    lines = wait_for(lambda: _udp3544(ns), "3544 listening")
    assert len(lines) == 1 and f"pid={st['worker_pid']}," in lines[0]  # the worker's alone
    assert f"pid={e.proc.pid}," not in lines[0]
    st2 = wait_for(lambda: (s := e.status()) and "0.0.0.0:3544" in s["bound"] and s,
                   "bound lists 3544")
    assert st2["worker_pid"] == st["worker_pid"]  # no restart needed
    assert st2["discovery"]["interfaces"] == ["v1"]

    sh("ip", "netns", "exec", ns, "ip", "addr", "del", "10.44.0.1/24", "dev", "v1")
    wait_for(lambda: "no interface qualifies any more; UDP 3544 closed" in e.text(),
             "3544 closed")
    wait_for(lambda: _udp3544(ns) == [], "3544 gone")
    assert e.status()["worker_pid"] == st["worker_pid"]
    assert e.stop() == 0


def test_watchdog_off_reports_a_frozen_worker_and_takes_it_back_when_it_thaws(ns, tmp_path):
    """`WorkerWatchdog off`: the parent reports the frozen worker but never kills it; once it
    runs again it answers the status socket itself (same worker, no restart)."""
    e = Engine(ns, tmp_path, "rly", RELAY_CONF + "WorkerWatchdog off\n")
    st = e.ready()
    pid = st["worker_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = wait_for(
            lambda: (s := e.try_status()) and s.get("worker") == "unresponsive" and s,
            "the parent reports the frozen worker", timeout=30,
        )
        assert frozen["worker_watchdog"] == 0 and frozen["worker_pid"] == pid
    finally:
        os.kill(pid, signal.SIGCONT)
    back = wait_for(lambda: (s := e.try_status()) and s.get("worker") == "running" and s,
                    "the thawed worker answers again", timeout=30)
    assert back["worker_pid"] == pid and back["worker_restarts"] == st["worker_restarts"]
    assert f"worker {pid} unresponsive: no heartbeat for" in e.text()
    assert "(WorkerWatchdog off: not restarted)" in e.text()
    wait_for(lambda: f"worker {pid} answers again after" in e.text(), "thaw logged")
    assert "killing it" not in e.text()
    assert e.stop() == 0
