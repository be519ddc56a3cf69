"""Issue 3: our engine's client and relay in the scenarios the lab was built for.

Scenario 1 (miredo clients qualify against OUR server, reach the native host through
miredo's relay and ping each other across two NATs through our server) is the matrix
combination `srvO-rlyD-cliD-cli2D-restricted` in test_interop_matrix.py and is not repeated
here.  This file adds:

* scenarios 2 and 3 as a client swap: with miredo's (2) or our (3) server and relay and a
  miredo client behind NAT 2, the client behind NAT 1 is played by our engine and then, in
  the same lab, by miredo; both go through the same paths (native host and the other client,
  both directions, cold and warm, 1400-byte payloads) and the timings are printed side by
  side.  Ours must pass every path miredo passes.
* scenario 4: SIGHUP to our client and our relay while pings run both ways every 50 ms.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from teredolab.topology import NetnsLab
from tests.kernel import matrix
from tests.kernel.harness import (
    DEBIAN,
    OURS,
    Daemon,
    Implementation,
    Stack,
    engine_status,
    link_exists,
    parse_ping,
    ping,
    start_client,
    start_relay,
    start_server,
    start_stack,
    teredo_address,
    wait_for_teredo_address,
    write_client_conf,
)
from tests.kernel.paths import NATIVE, PathResult, PingPath, format_table, run_path_list

pytestmark = pytest.mark.kernel

# A fresh client: it starts the traffic towards the native host and the other client.
FIRST_LAUNCH = [
    PingPath("cli -> v6 host (cold: ping test via server)", "cli", NATIVE, 56, "cold"),
    PingPath("v6 host -> cli (via relay)", NATIVE, "cli", 56, "warm"),
    PingPath("v6 host -> cli, 1400 bytes (after PTB: fragments)", NATIVE, "cli", 1400, "warm",
             prime=True),
    PingPath("cli -> v6 host, 1400 bytes (client fragments)", "cli", NATIVE, 1400, "warm"),
    PingPath("cli -> cli2 (cold: hole punching)", "cli", "cli2", 56, "cold"),
    PingPath("cli2 -> cli", "cli2", "cli", 56, "warm"),
]
# The same client restarted (a new address, so nobody knows it): the others start.
SECOND_LAUNCH = [
    PingPath("v6 host -> cli (cold: relay bubbles via server)", NATIVE, "cli", 56, "cold"),
    PingPath("cli -> v6 host (via relay)", "cli", NATIVE, 56, "warm"),
    PingPath("cli2 -> cli (cold: hole punching from the other side)", "cli2", "cli", 56,
             "cold"),
    PingPath("cli -> cli2", "cli", "cli2", 56, "warm"),
]


def _client_run(stack: Stack, impl: Implementation, launch: str,
                paths: list[PingPath]) -> tuple[float, list[PathResult], int | None]:
    """Launch `impl` as the client behind NAT 1, ping `paths`, TERM it; returns
    (qualification seconds, rows, exit status).  The interface must be gone afterwards so
    the next client starts from nothing."""
    lab = stack.lab
    spec = lab.spec
    name = f"cli-{impl.name}-{launch}"
    conf = write_client_conf(stack.run_dir / f"{name}.conf", spec)
    d = Daemon(lab, "cli", "client", conf, stack.run_dir, impl, name=name)
    stack.daemons.append(d.start())
    try:
        addr, secs = wait_for_teredo_address(lab, "cli", spec.teredo_if, 20.0,
                                              since=d.started_at, daemon=d)
        rows = run_path_list(lab, paths, {**stack.addresses(), "cli": addr})
    finally:
        code = d.stop()
        stack.daemons.remove(d)
    assert not link_exists(lab, "cli", spec.teredo_if), f"{name} left {spec.teredo_if} behind"
    return secs, rows, code


def _mean_rtt(rows: list[PathResult]) -> float | None:
    avgs = [r.result.avg for r in rows if r.result.avg is not None]
    return statistics.fmean(avgs) if avgs else None


def _fmt(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _client_swap(lab: NetnsLab, run_dir: Path, infra: Implementation, title: str, capsys) -> None:
    stack = Stack(lab, run_dir)
    try:
        start_server(stack, infra)
        start_relay(stack, infra)
        start_client(stack, "cli2", DEBIAN)  # the miredo client behind NAT 2
        got: dict[str, tuple[list[float], list[PathResult], list[int | None]]] = {}
        for impl in (OURS, DEBIAN):
            q1, rows1, c1 = _client_run(stack, impl, "a", FIRST_LAUNCH)
            q2, rows2, c2 = _client_run(stack, impl, "b", SECOND_LAUNCH)
            got[impl.name] = ([q1, q2], rows1 + rows2, [c1, c2])
        logs = stack.logs()
    finally:
        codes = stack.stop()
    ours, theirs = got["ours"], got["debian"]
    q_ours, q_deb = statistics.fmean(ours[0]), statistics.fmean(theirs[0])
    # Warm paths measure the tunnel; a cold path's average is dominated by its first echo,
    # which waits for bubbles or the connectivity test (shown separately).
    warm = [i for i, r in enumerate(ours[1]) if r.path.state == "warm"]
    cold = [i for i, r in enumerate(ours[1]) if r.path.state == "cold"]

    def rtt(rows: list[PathResult], idx: list[int]) -> str:
        return _fmt(_mean_rtt([rows[i] for i in idx]), 3)

    side = (f"{title}: qualification: ours {q_ours:.3f} s, miredo {q_deb:.3f} s; "
            f"RTT avg: ours {rtt(ours[1], warm)} ms, miredo {rtt(theirs[1], warm)} ms "
            f"(warm paths; cold paths: ours {rtt(ours[1], cold)} ms, miredo "
            f"{rtt(theirs[1], cold)} ms; qualification per launch: ours "
            f"{', '.join(f'{q:.3f}' for q in ours[0])}, miredo "
            f"{', '.join(f'{q:.3f}' for q in theirs[0])})")
    matrix.note(side)
    with capsys.disabled():
        print(f"\n{title}\n" + format_table(ours[1], "our client:") + "\n"
              + format_table(theirs[1], "miredo's client:") + "\n" + side, flush=True)

    worse = [f"{o.path.name}: ours {o.result.summary()}, miredo {m.result.summary()}"
             for o, m in zip(ours[1], theirs[1], strict=True) if matrix.worse_than(o, m)]
    assert not worse, "our client did worse than miredo's:\n  " + "\n  ".join(worse) + logs
    # miredo passes every one of these paths here; ours must too (not only "as well as").
    failed = [f"{o.path.name}: {o.result.summary()}" for o in ours[1] if o.verdict != "PASS"]
    assert not failed, "our client:\n  " + "\n  ".join(failed) + logs
    assert ours[2] == [0, 0] and theirs[2] == [0, 0], (ours[2], theirs[2], logs)
    assert codes == dict.fromkeys(codes, 0), (codes, logs)


def test_scenario2_our_client_vs_miredo_client_with_miredo_server_and_relay(
        debian_miredo, lab_factory, run_dir, capsys):
    _client_swap(lab_factory(), run_dir, DEBIAN,
                 "scenario 2 (miredo server + relay, miredo cli2)", capsys)


def test_scenario3_our_client_vs_miredo_client_with_our_server_and_relay(
        debian_miredo, lab_factory, run_dir, capsys):
    _client_swap(lab_factory(), run_dir, OURS,
                 "scenario 3 (our server + relay, miredo cli2)", capsys)


# --------------------------------------------------------------------------- scenario 4
def _wait(pred, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def _ifindex(lab: NetnsLab, role: str, ifname: str) -> int:
    cp = lab.exec(role, ["ip", "-j", "link", "show", "dev", ifname], check=True)
    return int(json.loads(cp.stdout)[0]["ifindex"])


def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def _tunnel_counter(d: Daemon) -> int:
    c = engine_status(d.status_socket)["counters"]
    return int(c["tun_in_packets"]) + int(c["tun_out_packets"])


def _flowing(d: Daemon, more: int, what: str) -> None:
    """Wait until `more` packets crossed the daemon's tunnel (the pings are running)."""
    start = _tunnel_counter(d)
    _wait(lambda: _tunnel_counter(d) >= start + more, f"{more} packets through {what}")


def _hup(d: Daemon) -> None:
    before = d.log_text().count("configuration reloaded in place")
    d.proc.send_signal(signal.SIGHUP)
    _wait(lambda: d.log_text().count("configuration reloaded in place") > before,
          f"{d.name} to reload in place")


def _routes6(lab: NetnsLab, role: str) -> str:
    return lab.exec(role, ["ip", "-6", "route", "show", "table", "all"]).stdout


def test_scenario4_hup_under_running_pings(debian_miredo, lab_factory, run_dir, capsys,
                                           data_path):
    """On both data paths of the relay (`data_path`, tests/conftest.py); a client has one."""
    lab = lab_factory(with_client2=False)
    spec = lab.spec
    stack = start_stack(lab, run_dir, OURS)
    pings: list[subprocess.Popen] = []
    try:
        cli, rly = stack.clients["cli"].daemon, stack.daemons[1]
        assert rly.kind == "relay"
        addr = stack.clients["cli"].address
        before = {r: _ifindex(lab, r, spec.teredo_if) for r in ("cli", "rly")}

        # Each engine's worker is the parent's child, unprivileged.
        for d in stack.daemons:
            st = engine_status(d.status_socket)
            kids = _children(d.pid)
            assert kids == [st["worker_pid"]], (d.name, kids, st.get("worker_pid"))
            w = _proc_status(kids[0])
            assert "0" not in w["Uid"].split(), (d.name, w["Uid"])
            assert int(w["CapEff"], 16) == 0 and int(w["CapPrm"], 16) == 0, (d.name, w)
            assert _proc_status(d.pid)["Uid"].split()[0] == "0"  # the parent keeps root
        workers = {d.name: engine_status(d.status_socket)["worker_pid"] for d in stack.daemons}
        assert engine_status(rly.status_socket)["data_path"] == data_path
        assert engine_status(cli.status_socket)["data_path"] == "python"

        # Warm both directions first: the cold path's queued first echo is not what is
        # measured here.
        assert ping(lab, "cli", spec.v6_host, count=2).received == 2
        assert ping(lab, NATIVE, addr, count=2).received == 2
        for role, dst in (("cli", spec.v6_host), (NATIVE, addr)):
            pings.append(lab.spawn(role, ["ping", "-6", "-n", "-i", "0.05", "-W", "1", dst],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True))
        _flowing(cli, 100, "the client")
        _hup(cli)
        _flowing(cli, 100, "the client after its HUP")
        _hup(rly)
        _flowing(rly, 100, "the relay after its HUP")
        results = []
        for p in pings:
            p.send_signal(signal.SIGINT)  # ping prints its summary on SIGINT
            out, _ = p.communicate(timeout=10)
            results.append(parse_ping(out))
        pings.clear()

        with capsys.disabled():
            print(f"\nscenario 4, HUP to our client and relay under ping -i 0.05: "
                  f"cli -> v6 host {results[0].summary()}; "
                  f"v6 host -> cli {results[1].summary()}", flush=True)
        matrix.note(f"scenario 4 (HUP client+relay mid-stream): cli -> v6 host "
                    f"{results[0].summary()}; v6 host -> cli {results[1].summary()}")
        for name, res in zip(("cli -> v6 host", "v6 host -> cli"), results, strict=True):
            assert res.sent >= 50, (name, res.summary())
            assert res.received >= 0.9 * res.sent, (name, res.summary(), stack.logs())
        assert {r: _ifindex(lab, r, spec.teredo_if) for r in ("cli", "rly")} == before
        assert teredo_address(lab, "cli", spec.teredo_if) == addr
        assert engine_status(cli.status_socket)["address"] == addr
        assert {d.name: engine_status(d.status_socket)["worker_pid"]
                for d in stack.daemons} == workers, "a HUP with the same file restarted a worker"
    finally:
        for p in pings:
            p.kill()
            p.wait()
        codes = stack.stop()
    assert codes == dict.fromkeys(codes, 0), (codes, stack.logs())

    # TERM leaves nothing: no tunnel, no Teredo routes, no pid file, socket or process.
    for role in ("cli", "rly"):
        assert not link_exists(lab, role, spec.teredo_if)
    assert "2001::/32" not in _routes6(lab, "rly")
    assert "default" not in _routes6(lab, "cli")
    for d in stack.daemons:
        assert not d.pidfile.exists(), d.pidfile
        assert not d.status_socket.exists(), d.status_socket
        assert not Path(f"/proc/{workers[d.name]}").exists(), (d.name, workers[d.name])
    for role in ("srv", "rly", "cli", "v6"):
        left = subprocess.run(["ip", "netns", "pids", lab.ns(role)], capture_output=True,
                              text=True).stdout.split()
        assert left == [], (role, left)
