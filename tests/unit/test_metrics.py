"""`miredoctl metrics`: the exposition is what Prometheus and its tools accept, and says what the
fleet's sources say.

The engine is a real unix socket answering a contract §4 status object; supervisord is a stand-in
that hands `gather` the process table (the kernel ring runs the real one, see
tests/kernel/test_prometheus.py). Output is judged by prometheus-client's own parser and by
`promtool check metrics` from Debian's prometheus package, not by string matching.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from supervisor.states import ProcessStates

from miredoctl import cli, metrics
from miredoctl.exporter import serve
from miredoctl.listeners import history
from miredoctl.metrics import FleetCollector, Snapshot, exposition, families, write_textfile
from miredoctl.state import StatePaths
from miredoctl.status import InstanceStatus

T0 = 1_764_130_000.0
ADDR = "2001:0:cb00:710a:c9:3c53:39cc:9bfe"
CLIENT = {
    "version": "0.1.0", "pid": 4242, "role": "client", "relay_type": "client",
    "state": "qualified", "started": T0, "interface": "teredo", "mtu": 1280,
    "address": ADDR, "server": "203.0.113.10", "mapped": {"ip": "198.51.100.1", "port": 50092},
    "last_qualified": T0 + 1.5, "bound": ["0.0.0.0:50092"], "worker": "running",
    "worker_restarts": 2, "peers": {"count": 3, "trusted": 2},
    "peer_memory": {"bytes": 900, "limit": 4194304},
    "counters": {"udp_in_packets": 10, "udp_in_bytes": 1000, "udp_out_packets": 11,
                 "udp_out_bytes": 1100, "tun_in_packets": 5, "tun_in_bytes": 500,
                 "tun_out_packets": 6, "tun_out_bytes": 600, "raw6_out_packets": 0,
                 "raw6_out_bytes": 0, "drops": {"tun_dst_multicast": 4, "bad_bubble": 1}},
    "status_socket": {"clients": 1, "answered": 9, "timeouts": 0, "evicted": 0},
    "icmp_errors_sent": 1,
    "gc": {"enabled": True, "frozen": 14000, "collections": [310, 28, 1]},
}
SERVER_RATELIMIT = {
    "rs_per_source": {"rate": 20, "burst": 50, "keys": 2, "max_keys": 65536, "denied": 7,
                      "evictions": 1},
    "rs_total_denied": 3,
    "forward_per_source": {"rate": 500, "burst": 1000, "keys": 0, "max_keys": 65536,
                           "denied": 0, "evictions": 0},
    "forward_total_denied": 0,
}


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(text: str, name: str) -> list[Sample]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _value(text: str, name: str, **labels: str) -> float:
    found = [s.value for s in _samples(text, name)
             if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


class _Fixed(metrics.Collector):
    """A collector that exposes a given snapshot (families() without any gathering)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        yield from families(self.snap)


def _rows() -> list[InstanceStatus]:
    """One of each kind the exporter must handle."""
    ours = InstanceStatus("client1", "client", "teredo-engine", "ns1", True, "RUNNING", pid=4242,
                          process_state="RUNNING", engine_pid=4242, uptime=60.0,
                          tunnel_state="qualified", address=ADDR, mtu=1280,
                          last_qualified=T0 + 1.5, restarts=1, recent_restarts=1,
                          engine_status=CLIENT)
    server = InstanceStatus("server", "server", "teredo-engine", None, True, "FLAPPING",
                            pid=77, process_state="RUNNING", engine_pid=77, uptime=5.0,
                            tunnel_state="running", restarts=4, recent_restarts=3,
                            flapping=True,
                            health={"stopped": None, "recent": True,
                                    "last": {"time": T0, "action": "restart", "reason": "x",
                                             "text": "restarted by health check: x"}},
                            engine_status={"pid": 77, "role": "server", "worker": "running",
                                           "handled": {"ra_sent": 12},
                                           "ratelimit": SERVER_RATELIMIT,
                                           "counters": {"raw6_out_packets": 2,
                                                        "raw6_out_bytes": 160, "drops": {}}})
    # Debian's miredo: the kernel's interface counters (rx = written by the daemon)
    miredo = InstanceStatus("client2", "client", "miredo", "ns2", True, "RUNNING", pid=88,
                            process_state="RUNNING", engine_pid=88, uptime=30.0,
                            tunnel_state="not qualified", rx_packets=3, rx_bytes=300,
                            tx_packets=4, tx_bytes=400)
    stopped = InstanceStatus("relay", "relay", "teredo-engine", None, True, "FATAL",
                             process_state="FATAL", error="status socket: gone")
    orphan = InstanceStatus("old", None, None, None, False, "ORPHAN")
    disabled = InstanceStatus("spare", "client", "teredo-engine", None, False, "NOT ADDED")
    return [ours, server, miredo, stopped, orphan, disabled]


@pytest.fixture
def text() -> str:
    snap = Snapshot(_rows(), supervisord_up=True, inventory_ok=True, duration=0.01, time=T0 + 60)
    return exposition(_Fixed(snap)).decode()


def test_exposition_parses_with_help_and_conventional_names(text: str) -> None:
    fams = list(text_string_to_metric_families(text))
    assert fams, text
    for fam in fams:
        assert fam.documentation.strip(), f"{fam.name} has no HELP"
        assert fam.name.startswith("teredo_"), fam.name
        if fam.type == "counter":
            assert all(s.name.endswith("_total") for s in fam.samples), fam
        else:
            assert not any(s.name.endswith("_total") for s in fam.samples), fam
        for sample in fam.samples:
            if sample.name not in ("teredo_supervisord_up", "teredo_inventory_ok",
                                   "teredo_scrape_duration_seconds"):
                assert {"instance", "role", "engine"} <= set(sample.labels), sample
    # units in names: seconds and bytes are base units
    names = {s.name for f in fams for s in f.samples}
    assert not any(n.endswith(("_ms", "_milliseconds", "_kb", "_kilobytes")) for n in names)


def test_values_follow_the_sources(text: str) -> None:
    lab = {"instance": "client1", "role": "client", "engine": "teredo-engine"}
    assert _value(text, "teredo_up", **lab) == 1
    assert _value(text, "teredo_qualified", **lab) == 1
    assert _value(text, "teredo_last_qualified_timestamp_seconds", **lab) == T0 + 1.5
    assert _value(text, "teredo_peers", **lab) == 3
    assert _value(text, "teredo_trusted_peers", **lab) == 2
    assert _value(text, "teredo_udp_packets_total", direction="in", **lab) == 10
    assert _value(text, "teredo_udp_bytes_total", direction="out", **lab) == 1100
    assert _value(text, "teredo_tun_packets_total", direction="out", **lab) == 6
    assert _value(text, "teredo_drops_total", reason="tun_dst_multicast", **lab) == 4
    assert _value(text, "teredo_drops_total", reason="bad_bubble", **lab) == 1
    assert _value(text, "teredo_worker_restarts_total", **lab) == 2
    assert _value(text, "teredo_gc_collections_total", generation="2", **lab) == 1
    assert _value(text, "teredo_gc_collections_total", generation="0", **lab) == 310
    assert _value(text, "teredo_restarts_total", **lab) == 1
    assert _value(text, "teredo_uptime_seconds", **lab) == 60
    assert _value(text, "teredo_process_state", state="RUNNING", **lab) == 1
    assert _value(text, "teredo_process_state", state="FATAL", **lab) == 0
    # raw IPv6 is a server's path only
    assert not [s for s in _samples(text, "teredo_raw6_packets_total")
                if s.labels["instance"] == "client1"]

    srv = {"instance": "server", "role": "server"}
    assert _value(text, "teredo_up", **srv) == 1  # supervisord runs it, flapping or not
    assert _value(text, "teredo_flapping", **srv) == 1
    assert _value(text, "teredo_health_stopped", **srv) == 0
    assert _value(text, "teredo_health_last_action_timestamp_seconds", action="restart",
                  **srv) == T0
    assert not [s for s in _samples(text, "teredo_health_last_action_timestamp_seconds")
                if s.labels["instance"] != "server"]
    assert _value(text, "teredo_process_state", state="FLAPPING", **srv) == 1
    assert _value(text, "teredo_ratelimit_denied_total", limiter="rs_per_source", **srv) == 7
    assert _value(text, "teredo_ratelimit_denied_total", limiter="rs_total", **srv) == 3
    assert _value(text, "teredo_ratelimit_evictions_total", limiter="rs_per_source", **srv) == 1
    assert _value(text, "teredo_ratelimit_keys", limiter="rs_per_source", **srv) == 2
    assert _value(text, "teredo_server_handled_total", kind="ra_sent", **srv) == 12
    assert _value(text, "teredo_raw6_packets_total", direction="out", **srv) == 2
    assert not _samples(text, "teredo_qualified") or all(
        s.labels["role"] == "client" for s in _samples(text, "teredo_qualified"))

    # miredo: the kernel transmits to the TUN what the daemon reads (in), receives what it
    # writes (out); no status socket, so no peers
    mir = {"instance": "client2", "engine": "miredo"}
    assert _value(text, "teredo_tun_packets_total", direction="in", **mir) == 4
    assert _value(text, "teredo_tun_bytes_total", direction="out", **mir) == 300
    assert _value(text, "teredo_qualified", **mir) == 0
    assert _value(text, "teredo_address_present", **mir) == 0
    assert not [s for s in _samples(text, "teredo_peers") if s.labels["instance"] == "client2"]

    # not running: up 0, its state, no traffic series; orphans and NOT ADDED are labelled too
    assert _value(text, "teredo_up", instance="relay") == 0
    assert _value(text, "teredo_process_state", instance="relay", state="FATAL") == 1
    assert _value(text, "teredo_status_error", instance="relay") == 1
    assert not [s for s in _samples(text, "teredo_udp_packets_total")
                if s.labels["instance"] == "relay"]
    assert _value(text, "teredo_process_state", instance="old", role="unknown",
                  state="ORPHAN") == 1
    assert _value(text, "teredo_process_state", instance="spare", state="NOT_ADDED") == 1
    assert _value(text, "teredo_supervisord_up") == 1


def test_promtool_accepts_the_output(text: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        (proc.stdout, proc.stderr)


# -- gathering: a real status socket, supervisord's table from a stand-in ---------------------
class EngineSocket:
    """Answers `status\\n` with a contract §4 object and counts the requests."""

    def __init__(self, path: Path, payload: dict[str, Any]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.payload = payload
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)
                self.requests += 1
                conn.sendall(json.dumps(self.payload).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


class FakeSupervisord:
    def __init__(self, paths: StatePaths, timeout: float = 0) -> None:
        pass

    def running(self) -> bool:
        return True

    def processes(self) -> dict[str, dict[str, Any]]:
        return {"client1": {"name": "client1", "state": ProcessStates.RUNNING,
                            "statename": "RUNNING", "pid": 4242, "start": T0, "now": T0 + 60}}

    def close(self) -> None:
        pass


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, StatePaths]:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "client1.yaml").write_text("role: client\nserver: 203.0.113.10\n")
    (fleet / "relay.yaml").write_text("role: relay\ninterface: tdo-r1\n")
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    return fleet, paths


def test_a_scrape_asks_each_engine_once_and_reads_the_history(fleet, monkeypatch) -> None:
    fleet_dir, paths = fleet
    monkeypatch.setattr(metrics, "SupervisordClient", FakeSupervisord)
    engine = EngineSocket(paths.status_socket("client1"), CLIENT)
    try:
        # two automatic restarts just now, as the reaper records them
        for t in (1.0, 2.0):
            history.record(paths.history("client1"),
                           history.Transition(T0 + t, "STARTING", "EXITED", 4242))
        text = exposition(FleetCollector(fleet_dir, paths)).decode()
    finally:
        engine.close()
    assert engine.requests == 1
    lab = {"instance": "client1", "role": "client", "engine": "teredo-engine"}
    assert _value(text, "teredo_restarts_total", **lab) == 2
    assert _value(text, "teredo_drops_total", reason="tun_dst_multicast", **lab) == 4
    assert _value(text, "teredo_ready", **lab) == 1
    # in the inventory, not in supervisord
    assert _value(text, "teredo_process_state", instance="relay", state="NOT_ADDED") == 1


def test_a_broken_inventory_keeps_the_last_good_one(fleet, monkeypatch) -> None:
    fleet_dir, paths = fleet
    monkeypatch.setattr(metrics, "SupervisordClient", FakeSupervisord)
    warnings: list[str] = []
    collector = FleetCollector(fleet_dir, paths, warn=warnings.append)
    exposition(collector)
    (fleet_dir / "relay.yaml").write_text("role: relai\n")
    text = exposition(collector).decode()
    assert _value(text, "teredo_inventory_ok") == 0
    assert _value(text, "teredo_up", instance="relay", role="relay") == 0
    exposition(collector)
    assert len(warnings) == 1 and "problem" in warnings[0]  # said once, not every scrape


def test_cli_metrics_without_supervisord_is_still_an_answer(fleet, capsys) -> None:
    fleet_dir, paths = fleet
    code = cli.main(["metrics", "--fleet", str(fleet_dir), "--state-dir", str(paths.root)])
    out = capsys.readouterr().out
    assert code == 0
    assert _value(out, "teredo_supervisord_up") == 0
    assert _value(out, "teredo_up", instance="client1") == 0
    assert cli.main(["exporter", "--listen", "localhost:9531", "--fleet", str(fleet_dir)]) == 2


# -- --textfile ---------------------------------------------------------------------------------
def test_textfile_is_replaced_atomically(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    target = out / "miredoctl.prom"
    target.write_text("old\n")
    seen: list[tuple[str, str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        # at the rename the new file is complete, in the same folder, and not a *.prom yet
        seen.append((Path(src).parent.name, Path(src).name, Path(src).read_text()))
        assert target.read_text() == "old\n"  # readers still see the old file whole
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert write_textfile(out, b"# HELP x y\nnew 1\n") == target
    assert target.read_text() == "# HELP x y\nnew 1\n"
    [(folder, tmp_name, content)] = seen
    assert folder == "textfile" and not tmp_name.endswith(".prom")
    assert content == "# HELP x y\nnew 1\n"
    assert sorted(p.name for p in out.iterdir()) == ["miredoctl.prom"]


def test_textfile_failure_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "miredoctl.prom"
    target.write_text("old\n")

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(metrics.MiredoctlError, match="No space left"):
        write_textfile(tmp_path, b"new 1\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["miredoctl.prom"]
    with pytest.raises(metrics.MiredoctlError, match="not a directory"):
        write_textfile(tmp_path / "nope", b"")


def test_cli_textfile_output_parses(fleet) -> None:
    fleet_dir, paths = fleet
    out = fleet_dir.parent / "tf"
    out.mkdir()
    assert cli.main(["metrics", "--textfile", str(out), "--fleet", str(fleet_dir),
                     "--state-dir", str(paths.root)]) == 0
    text = (out / "miredoctl.prom").read_text()
    assert "teredo_up" in _families(text)


# -- the exporter over HTTP ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exporter_serves_fresh_metrics_over_http(fleet, monkeypatch) -> None:
    fleet_dir, paths = fleet
    monkeypatch.setattr(metrics, "SupervisordClient", FakeSupervisord)
    engine = EngineSocket(paths.status_socket("client1"), CLIENT)
    stop = threading.Event()
    port = _free_port()
    server = threading.Thread(target=serve, args=(FleetCollector(fleet_dir, paths),
                                                  f"127.0.0.1:{port}", stop), daemon=True)
    server.start()
    try:
        texts = []
        for _attempt in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    texts.append(r.read().decode())
                    if len(texts) == 2:
                        break
            except OSError:
                stop.wait(0.05)
        assert len(texts) == 2
        assert engine.requests == 2  # gathered on each scrape, nothing cached
        lab = {"instance": "client1", "role": "client", "engine": "teredo-engine"}
        assert _value(texts[1], "teredo_udp_packets_total", direction="in", **lab) == 10
    finally:
        stop.set()
        server.join(timeout=10)
        engine.close()
    assert not server.is_alive()
