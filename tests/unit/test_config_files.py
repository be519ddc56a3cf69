"""Real config files: Debian's shipped ones, the lab's generated ones, our examples.

Debian's files are read from the installed packages at test time (CI installs miredo and
miredo-server). Host names in them are answered by a fake resolver: tests never use DNS.
"""

import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, load_config, parse_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = os.path.join(ROOT, "tests", "vectors", "configs")
EXAMPLES = os.path.join(ROOT, "examples")

FAKE_DNS = {"teredo-debian.remlab.net": "192.0.2.50", "teredo.remlab.net": "192.0.2.51"}


def fake_resolver(host):
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    raise OSError(-2, "Name or service not known")


def installed(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed (apt-get install miredo miredo-server)")
    return path


def test_debian_miredo_conf():
    c = load_config(installed("/etc/miredo/miredo.conf"), resolver=fake_resolver)
    assert c.role == "client" and c.relay_type == "client"
    assert c.interface_name == "teredo"
    assert c.server_host == "teredo-debian.remlab.net" and c.server_address == "192.0.2.50"
    assert c.local_discovery == "enabled" and c.warnings == ()


def test_debian_miredo_server_conf():
    c = load_config(installed("/etc/miredo/miredo-server.conf"), resolver=fake_resolver)
    assert c.role == "server" and c.relay_type == "server"
    assert (c.server_bind_address, c.server_bind_address2) == ("192.0.2.221", "192.0.2.222")
    assert c.prefix == 0x20010000 and c.interface_mtu == 1280


def test_debian_sample_miredo_conf():
    c = load_config(installed("/usr/share/doc/miredo/examples/miredo.conf"),
                    resolver=fake_resolver)
    assert c.role == "client" and c.server_address == "192.0.2.51"
    assert c.interface_name == "teredo" and c.line_of("ServerAddress") is not None


def test_debian_sample_miredo_server_conf():
    c = load_config(installed("/usr/share/doc/miredo-server/examples/miredo-server.conf"),
                    resolver=fake_resolver)
    assert c.role == "server" and c.server_bind_address2 == "192.0.2.222"


def test_lab_server_conf():
    c = load_config(os.path.join(VECTORS, "lab-server.conf"))
    assert c.role == "server"
    assert (c.server_bind_address, c.server_bind_address2) == ("203.0.113.10", "203.0.113.11")
    assert c.prefix == 0x20010000 and c.directive_count == 3


def test_lab_relay_conf():
    c = load_config(os.path.join(VECTORS, "lab-relay.conf"))
    assert (c.role, c.relay_type) == ("relay", "cone")
    assert (c.interface_name, c.bind_address, c.bind_port) == ("teredo", "203.0.113.20", 3545)
    assert c.prefix == 0x20010000


@pytest.mark.parametrize(
    ("name", "port"), [("lab-client.conf", 0), ("lab-client-bindport.conf", 3546)]
)
def test_lab_client_confs(name, port):
    c = load_config(os.path.join(VECTORS, name))
    assert (c.role, c.relay_type, c.interface_name) == ("client", "client", "teredo")
    assert (c.server_address, c.server_address2) == ("203.0.113.10", "203.0.113.11")
    assert c.bind_port == port


@pytest.mark.parametrize(("name", "role"), [("client.conf", "client"), ("relay.conf", "relay"),
                                            ("server.conf", "server")])
def test_examples(name, role):
    c = load_config(os.path.join(EXAMPLES, name))
    assert c.role == role and c.warnings == ()


def test_uncommenting_every_example_line_still_parses():
    """The commented-out directives in the examples are valid for their role too."""
    for name in ("client.conf", "relay.conf", "server.conf"):
        with open(os.path.join(EXAMPLES, name)) as f:
            lines = f.read().splitlines()
        enabled = [
            line[1:] if line.startswith("#") and line[1:2] in string.ascii_uppercase else line
            for line in lines
        ]
        c = parse_config("\n".join(enabled) + "\n", name)
        assert c.status_socket is not None, name


_WORDS = st.sampled_from(["RelayType", "ServerAddress", "ServerAddress2", "Prefix", "BindPort",
                          "InterfaceMTU", "InterfaceName", "LocalDiscovery", "StatusSocket",
                          "ServerBindAddress", "#", "client", "relay", "server", "0x10",
                          "203.0.113.10", "10.0.0.1", "ff02::", "2001::", "a.example", "\t"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.lists(_WORDS, max_size=4).map(" ".join), max_size=8)
                 .map(lambda ls: "\n".join(ls).encode())))
def test_parser_only_ever_raises_config_error(data):
    try:
        c = parse_config(data, "f.conf", resolver=fake_resolver)
    except ConfigError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.startswith("f.conf") and "\n" not in problem
    else:
        assert c.role in ("client", "relay", "server")
