"""A real Prometheus scrapes the fleet's exporter while the lab fleet runs (issue 13).

The fleet is the shipped one moved to this module's lab (fixtures of test_miredoctl_fleet), with
`exporter:` switched on in its defaults.yaml, so the exporter is the `_exporter` program of the
fleet's supervisord, as an operator would run it. client2 runs Debian's miredo, whose numbers
come from the kernel. Prometheus (Debian's /usr/bin/prometheus) runs by PID from a temp folder,
scrapes every second and loads docs/alerts.yml; the test asks its HTTP API, the way a
dashboard would, until every instance's series are there, then pings through two tunnels and
waits for the counters that must move.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from teredolab.topology import NetnsLab
from tests.kernel.test_miredoctl_fleet import Ctl, ctl_factory, lab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
INSTANCES = ("client1", "client2", "relay", "server")
CLIENTS = ("client1", "client2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _until(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until `cond` is truthy; the timeout only bounds a broken run, nothing is timed."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Prometheus:
    """One Prometheus server in a temp folder, stopped by its PID."""

    def __init__(self, folder: Path, target: str) -> None:
        self.folder = folder
        self.port = _free_port()
        config = folder / "prometheus.yml"
        # honor_labels: the exporter's `instance` label is the instance name (docs/metrics.md)
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(ROOT / "docs" / "alerts.yml")],
            "scrape_configs": [{"job_name": "teredo", "honor_labels": True,
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=folder, start_new_session=True)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        answer = json.loads(_get(url))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> dict[str, float]:
        """instance label -> value of an instant query."""
        result = self.api("query", query=expr)["result"]
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in result}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()

    def tail(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    for binary in (PROMETHEUS, PROMTOOL):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed (Debian package prometheus)")
    made: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        folder = tmp_path / f"prometheus{len(made)}"
        folder.mkdir()
        made.append(Prometheus(folder, target))
        return made[-1]

    yield start
    for prom in made:
        prom.stop()


def _all_instances(values: dict[str, float], names: tuple[str, ...] = INSTANCES,
                   want: float | None = None) -> dict[str, float] | None:
    if not set(names) <= set(values):
        return None
    if want is not None and any(values[n] != want for n in names):
        return None
    return values


def test_prometheus_scrapes_the_fleet_and_sees_pings_move_counters(
        lab: NetnsLab, ctl_factory, prometheus_factory) -> None:  # noqa: F811
    if not os.access("/usr/sbin/miredo", os.X_OK):
        pytest.skip("Debian's miredo is not installed")
    port = _free_port()
    ctl: Ctl = ctl_factory(overrides={
        "defaults": f'exporter: {{listen: "127.0.0.1:{port}"}}\n',
        "client2": "engine: miredo\n"})
    ctl.run("up", "--all")
    ctl.run("wait", "--timeout", "45")

    # the exporter is a program of the fleet's supervisord
    text = _until(lambda: _get(f"http://127.0.0.1:{port}/metrics").decode(), "the exporter")
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), \
        (proc.stdout, proc.stderr)

    prom = prometheus_factory(f"127.0.0.1:{port}")
    try:
        _until(lambda: prom.query('up{job="teredo"}') and
               set(prom.query('up{job="teredo"}').values()) == {1.0}, "a successful scrape")
        _until(lambda: _all_instances(prom.query("teredo_up"), want=1.0), "teredo_up == 1")
        _until(lambda: _all_instances(prom.query("teredo_qualified"), CLIENTS, want=1.0),
               "both clients qualified")
        assert prom.query('teredo_process_state{state="RUNNING"}') == \
            dict.fromkeys(INSTANCES, 1.0)
        # traffic series: UDP for our engines (qualification already moved them), the kernel's
        # TUN counters for miredo
        _until(lambda: _all_instances(prom.query(
            'sum by (instance) (teredo_udp_packets_total{direction="in"})'),
            ("client1", "relay", "server")), "UDP counters of every teredo-engine")
        _until(lambda: _all_instances(prom.query(
            'sum by (instance) (teredo_tun_packets_total)'), INSTANCES),
            "TUN counters of every instance")
        engines = {r["metric"]["instance"]: r["metric"]["engine"]
                   for r in prom.api("query", query="teredo_up")["result"]}
        assert engines == {"client1": "teredo-engine", "client2": "miredo",
                           "relay": "teredo-engine", "server": "teredo-engine"}

        def counters() -> dict[str, float]:
            out = {}
            for key, expr in {
                "c1_tun_in": 'teredo_tun_packets_total{instance="client1",direction="in"}',
                "c1_tun_out": 'teredo_tun_packets_total{instance="client1",direction="out"}',
                "c2_tun_in": 'teredo_tun_packets_total{instance="client2",direction="in"}',
                "c2_tun_out": 'teredo_tun_packets_total{instance="client2",direction="out"}',
                "relay_udp_in": 'teredo_udp_packets_total{instance="relay",direction="in"}',
                "relay_tun_out": 'teredo_tun_packets_total{instance="relay",direction="out"}',
            }.items():
                [value] = prom.query(expr).values()
                out[key] = value
            return out

        before = counters()
        count = 5
        for role in ("cli", "cli2"):  # client1 (ours), client2 (miredo) -> native host
            ping = lab.exec(role, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "3",
                                   lab.spec.v6_host], timeout=60)
            assert ping.returncode == 0, ping.stdout

        def moved() -> dict[str, float] | None:
            now = counters()
            delta = {k: now[k] - before[k] for k in now}
            # each echo request goes host -> TUN -> engine (in) and its reply engine -> TUN
            # (out); the relay receives the clients' requests by UDP and writes them to its TUN
            ok = all(delta[k] >= count for k in ("c1_tun_in", "c1_tun_out", "c2_tun_in",
                                                  "c2_tun_out"))
            ok = ok and delta["relay_udp_in"] >= 2 * count and delta["relay_tun_out"] >= 2 * count
            return delta if ok else None

        _until(moved, f"the counters to move by the {count} pings through each client")

        # the alert rules load and evaluate against these series
        groups = prom.api("rules")["groups"]
        assert [r["name"] for g in groups for r in g["rules"]] == [
            "TeredoClientUnqualified", "TeredoInstanceFlapping", "TeredoInstanceDown",
            "TeredoDropRateSpike", "TeredoMetricsIncomplete"]
        _until(lambda: all(r.get("health") == "ok" and r.get("lastEvaluation", "").startswith("2")
                           for g in prom.api("rules")["groups"] for r in g["rules"]),
               "every rule evaluated without error")
        assert prom.api("alerts")["alerts"] == []
        # the dashboard's queries run against the real series (and the core ones find some)
        dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", "1m")
                        .replace("$instance", ".*").replace("$role", ".*"))
                result = prom.api("query", query=expr)["result"]
                if panel["title"] in ("Instances running", "Clients qualified", "UDP packets/s",
                                      "TUN packets/s (in: host to tunnel, out: tunnel to host)"):
                    assert result, (panel["title"], expr)

        # switched off in the inventory: `up` removes the program, the engines stay
        pids = ctl.pids()
        defaults = ctl.fleet / "defaults.yaml"
        defaults.write_text(defaults.read_text().replace(
            f'exporter: {{listen: "127.0.0.1:{port}"}}\n', ""))
        results = {r["name"]: r["action"] for r in ctl.json("up")["results"]}
        assert results["_exporter"] == "removed"
        assert {n: results[n] for n in INSTANCES} == dict.fromkeys(INSTANCES, "unchanged")
        assert ctl.pids() == pids
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/metrics")
    except AssertionError:
        print(prom.tail())  # shown by pytest with the failure
        raise
