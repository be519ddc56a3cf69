"""metrics across hosts: two hosts' expositions become one valid exposition with a host label."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from miredoctl.remote.metricsmerge import merge, with_host

HOST_A = """\
# HELP teredo_supervisord_up 1 when the fleet's own supervisord answers on its socket
# TYPE teredo_supervisord_up gauge
teredo_supervisord_up 1.0
# HELP teredo_up 1 when supervisord reports the instance RUNNING
# TYPE teredo_up gauge
teredo_up{instance="r1",role="relay"} 1.0
# HELP teredo_drops_total Packets the engine dropped, by reason
# TYPE teredo_drops_total counter
teredo_drops_total{instance="r1",reason="bad"} 3.0
"""
HOST_B = """\
# HELP teredo_supervisord_up 1 when the fleet's own supervisord answers on its socket
# TYPE teredo_supervisord_up gauge
teredo_supervisord_up 0.0
# HELP teredo_up 1 when supervisord reports the instance RUNNING
# TYPE teredo_up gauge
# HELP teredo_drops_total Packets the engine dropped, by reason
# TYPE teredo_drops_total counter
"""


def test_samples_get_the_host_label_first() -> None:
    assert with_host('teredo_up{instance="r1"} 1.0', "fra1") == \
        'teredo_up{host="fra1",instance="r1"} 1.0'
    assert with_host("teredo_supervisord_up 1.0", "fra1") == \
        'teredo_supervisord_up{host="fra1"} 1.0'
    assert with_host("x{} 2", 'a"b') == 'x{host="a\\"b"} 2'


def test_two_hosts_merge_into_one_valid_exposition() -> None:
    text = merge({"fra1": HOST_A, "iad1": HOST_B})
    assert text.count("# TYPE teredo_supervisord_up gauge") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["host"]: s.value for s in families["teredo_supervisord_up"].samples}
    assert up == {"fra1": 1.0, "iad1": 0.0}
    (drop,) = families["teredo_drops"].samples
    assert drop.labels == {"host": "fra1", "instance": "r1", "reason": "bad"}
    # a family's samples stay together even when a later host adds to an earlier family
    lines = merge({"a": HOST_A, "b": HOST_A}).splitlines()
    ups = [i for i, ln in enumerate(lines) if ln.startswith("teredo_supervisord_up{")]
    assert ups == [ups[0], ups[0] + 1]
