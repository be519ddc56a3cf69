"""`PeerMemoryLimit` (issue 9, flaw 2): the peer table's byte budget for clients and relays."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import ConfigError, parse_config
from engine.proto.peers import CLIENT_MEMORY_LIMIT, RELAY_MEMORY_LIMIT

ROOT = Path(__file__).resolve().parents[2]
RELAY = "RelayType cone\n"
CLIENT = "ServerAddress 203.0.113.10\n"


def conf(text: str):
    return parse_config(text, "t.conf", resolver=lambda h: h)


@pytest.mark.parametrize(
    ("value", "size"),
    [("64M", 64 << 20), ("512k", 512 << 10), ("2G", 2 << 30), ("65536", 65536), ("1g", 1 << 30)],
)
def test_sizes(value: str, size: int):
    assert conf(RELAY + f"PeerMemoryLimit {value}\n").peer_memory_limit == size
    assert conf(CLIENT + f"peermemorylimit {value}\n").peer_memory_limit == size


def test_absent_keeps_the_role_default():
    assert conf(RELAY).peer_memory_limit is None
    assert conf(CLIENT).peer_memory_limit is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("64MB", "expected a size in bytes with an optional K, M or G suffix"),
        ("-1", "expected a size"),
        ("1.5M", "expected a size"),
        ("0x100000", "expected a size"),
        ("1000", "out of range (expected 64K-64G)"),
        ("65G", "out of range (expected 64K-64G)"),
    ],
)
def test_bad_values_are_file_line_errors(value: str, message: str):
    with pytest.raises(ConfigError) as e:
        conf(RELAY + "\n" + f"PeerMemoryLimit {value}\n")
    assert str(e.value).startswith("t.conf:3: PeerMemoryLimit: ")
    assert message in str(e.value)


def test_server_config_warns_superfluous():
    cfg = conf("ServerBindAddress 192.0.2.1\nPeerMemoryLimit 8M\n")
    assert cfg.peer_memory_limit is None
    assert any("t.conf:2: warning: superfluous directive PeerMemoryLimit" in w
               for w in cfg.warnings)


def test_examples_show_the_defaults():
    for name, default in (("relay.conf", RELAY_MEMORY_LIMIT), ("client.conf", CLIENT_MEMORY_LIMIT)):
        text = (ROOT / "examples" / name).read_text()
        m = re.search(r"^#PeerMemoryLimit\s+(\d+)M$", text, re.M)
        assert m is not None, name
        assert int(m.group(1)) << 20 == default
        # uncommented, the example parses to the same value
        assert conf(text.replace("#PeerMemoryLimit", "PeerMemoryLimit")).peer_memory_limit == (
            default)
