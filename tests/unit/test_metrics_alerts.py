"""docs/alerts.yml and docs/grafana-dashboard.json, judged by promtool and against the exporter.

`promtool check rules` parses the rules and their annotation templates; `promtool test rules`
feeds each alert the series it is about (and a healthy fleet) and checks when it fires. The
dashboard's queries go through the same PromQL parser as recording rules. Every metric name the
rules, the dashboard and docs/metrics.md use must be one the exporter produces.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from miredoctl.metrics import Snapshot, exposition
from tests.unit.test_metrics import T0, _Fixed, _rows

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
NAME = re.compile(r"\bteredo_[a-z0-9_]+")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def _exported() -> tuple[set[str], set[str]]:
    """(sample names, family names) of a scrape with one instance of every kind."""
    snap = Snapshot(_rows(), supervisord_up=True, inventory_ok=True, duration=0.01, time=T0)
    fams = list(text_string_to_metric_families(exposition(_Fixed(snap)).decode()))
    samples = {s.name for f in fams for s in f.samples}
    return samples, {f.name for f in fams}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_promtool_checks_the_rules() -> None:
    proc = _run("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


LAB = 'role="client",engine="teredo-engine"'
RULE_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [{
        "interval": "1m",
        "input_series": [
            # client1 never qualifies, client2 always is
            {"series": f'teredo_qualified{{instance="client1",{LAB}}}', "values": "0x100"},
            {"series": f'teredo_qualified{{instance="client2",{LAB}}}', "values": "1x100"},
            # relay flaps from minute 10
            {"series": 'teredo_flapping{instance="relay",role="relay",engine="miredo"}',
             "values": "0x9 1x90"},
            # spare is disabled in the inventory (never up), srv went down at minute 20
            {"series": 'teredo_up{instance="spare",role="client",engine="teredo-engine"}',
             "values": "0x100"},
            {"series": 'teredo_process_state{instance="spare",role="client",'
                       'engine="teredo-engine",state="DISABLED"}', "values": "1x100"},
            {"series": 'teredo_up{instance="srv",role="server",engine="teredo-engine"}',
             "values": "1x19 0x80"},
            {"series": 'teredo_process_state{instance="srv",role="server",'
                       'engine="teredo-engine",state="DISABLED"}', "values": "0x100"},
            # client2: 0.1 drops/s for 70 minutes, then 10/s: a spike
            {"series": f'teredo_drops_total{{instance="client2",{LAB},reason="rx_unknown_peer"}}',
             "values": "0+6x70 420+600x30"},
            # client1: steady 2 drops/s all along: above 1/s, but no spike
            {"series": f'teredo_drops_total{{instance="client1",{LAB},reason="tun_runt"}}',
             "values": "0+120x100"},
            # relay: no drops at all until minute 70, then 5/s (no baseline: a spike too)
            {"series": 'teredo_drops_total{instance="relay",role="relay",engine="miredo",'
                       'reason="udp_runt"}', "values": "_x70 0+300x30"},
            {"series": "teredo_supervisord_up", "values": "1x100"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "TeredoClientUnqualified", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "TeredoClientUnqualified", "exp_alerts": [
                {"exp_labels": {"instance": "client1", "role": "client",
                                "engine": "teredo-engine", "severity": "warning"}}]},
            {"eval_time": "10m", "alertname": "TeredoInstanceFlapping", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "TeredoInstanceFlapping", "exp_alerts": [
                {"exp_labels": {"instance": "relay", "role": "relay", "engine": "miredo",
                                "severity": "critical"}}]},
            {"eval_time": "21m", "alertname": "TeredoInstanceDown", "exp_alerts": []},
            {"eval_time": "23m", "alertname": "TeredoInstanceDown", "exp_alerts": [
                {"exp_labels": {"instance": "srv", "role": "server", "engine": "teredo-engine",
                                "severity": "critical"}}]},
            {"eval_time": "60m", "alertname": "TeredoDropRateSpike", "exp_alerts": []},
            {"eval_time": "80m", "alertname": "TeredoDropRateSpike", "exp_alerts": [
                {"exp_labels": {"instance": "client2", "role": "client",
                                "engine": "teredo-engine", "severity": "warning"}},
                {"exp_labels": {"instance": "relay", "role": "relay", "engine": "miredo",
                                "severity": "warning"}}]},
            {"eval_time": "60m", "alertname": "TeredoMetricsIncomplete", "exp_alerts": []},
        ],
    }],
}


def test_each_alert_fires_on_its_series_and_not_on_a_healthy_fleet(tmp_path: Path) -> None:
    # promtool compares annotations too; they are checked by `check rules`, so the copy under
    # test has none and the expected alerts need not repeat their text
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"],
                                                        **RULE_TESTS}))
    proc = _run("test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    record = [{"record": f"dashboard:q{i}", "expr": expr.replace("$__rate_interval", "5m")
               .replace("$instance", ".*").replace("$role", ".*")}
              for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": record}]}))
    proc = _run("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_dashboard_and_docs_name_only_exported_metrics() -> None:
    samples, families = _exported()
    used = set(NAME.findall(ALERTS.read_text())) | set(NAME.findall(" ".join(_dashboard_exprs())))
    assert used - samples == set()
    doc = METRICS_DOC.read_text()
    documented = set(NAME.findall(doc))
    assert {n for n in samples if f"`{n}`" not in doc} == set()  # every metric has its row
    assert documented - samples - families == set()  # and the doc invents none
