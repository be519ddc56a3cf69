"""engine.config: every directive, its defaults, the role rules and every error path."""

import re

import pytest

from engine.config import ConfigError, EngineConfig, load_config, parse_config

NAMES = {"teredo.example.net": "203.0.113.10", "relay.example.net": "203.0.113.20",
         "private.example.net": "10.1.2.3"}


def fake_resolver(host):
    try:
        return NAMES[host]
    except KeyError:
        raise OSError(-2, "Name or service not known") from None


def parse(text, **kw) -> EngineConfig:
    kw.setdefault("resolver", fake_resolver)
    return parse_config(text, "t.conf", **kw)


def problems(text, **kw) -> list[str]:
    kw.setdefault("resolver", fake_resolver)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.conf", **kw)
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def one_problem(text, **kw) -> str:
    found = problems(text, **kw)
    assert len(found) == 1, found
    return found[0]


CLIENT = "ServerAddress 203.0.113.10\n"


# --- defaults ------------------------------------------------------------------------------

def test_client_defaults():
    c = parse(CLIENT)
    assert c.role == "client" and c.relay_type == "client"
    assert c.server_address == "203.0.113.10" and c.server_host == "203.0.113.10"
    assert c.server_address2 == "203.0.113.11"  # man page: primary + 1
    assert c.local_discovery == "enabled" and c.discovery_enabled
    assert not c.discovery_includes_global
    assert c.discovery_interfaces is None
    assert c.discovery_netmask == "255.255.255.255"
    assert c.interface_name is None
    assert (c.bind_address, c.bind_port) == ("0.0.0.0", 0)
    assert c.syslog_facility == "daemon"
    assert c.status_socket is None
    assert c.server_bind_address is None and c.server_bind_address2 is None
    assert dict(c.lines) == {"ServerAddress": 1} and c.directive_count == 1
    assert c.path == "t.conf" and c.warnings == ()


def test_relay_defaults():
    c = parse("RelayType relay\n")
    assert c.role == "relay" and c.relay_type == "relay"
    assert c.prefix == 0x20010000 and c.interface_mtu == 1280
    assert c.server_address is None and c.local_discovery == "disabled"
    assert not c.discovery_enabled


def test_server_defaults():
    c = parse("ServerBindAddress 203.0.113.10\n")
    assert c.role == "server" and c.relay_type == "server"
    assert (c.server_bind_address, c.server_bind_address2) == ("203.0.113.10", "203.0.113.11")
    assert c.prefix == 0x20010000 and c.interface_mtu == 1280
    assert c.interface_name is None and c.server_address is None


def test_config_is_frozen():
    c = parse(CLIENT)
    with pytest.raises(AttributeError):
        c.role = "relay"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.lines["X"] = 1  # type: ignore[index]


def test_config_pickles():
    """The runtime sends a reloaded config to its worker process as a pickle."""
    import pickle

    c = parse(CLIENT + "DiscoveryInterfaces ^eth\nInterfaceName te0\nBindPort 0x10")
    back = pickle.loads(pickle.dumps(c))
    assert back == c and back.discovery_interfaces.search("eth1")
    assert dict(back.lines) == dict(c.lines) and back.warnings == c.warnings
    with pytest.raises(TypeError):
        back.lines["X"] = 1  # type: ignore[index]


# --- RelayType and the role ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("word", "role"),
    [("client", "client"), ("autoclient", "client"), ("relay", "relay"), ("cone", "relay"),
     ("restricted", "relay"), ("CONE", "relay"), ("Client", "client")],
)
def test_relay_types(word, role):
    extra = CLIENT if role == "client" else ""
    c = parse(f"RelayType {word}\n{extra}")
    assert c.role == role and c.relay_type == word.lower()


def test_relay_type_server():
    c = parse("RelayType server\nServerBindAddress 198.51.100.4\n")
    assert c.role == "server" and c.server_bind_address2 == "198.51.100.5"


def test_restricted_warns():
    c = parse("RelayType restricted\n")
    assert len(c.warnings) == 1 and c.warnings[0].startswith("t.conf:1: warning: RelayType")


def test_bad_relay_type():
    p = one_problem("RelayType gateway\n")
    assert p.startswith("t.conf:1: RelayType: expected one of client, autoclient, relay, cone")


def test_bad_relay_type_still_checks_the_other_values():
    found = problems("RelayType bogus\nBindPort 99999\nPrefix ff02::\n")
    assert [p.split(":")[1] for p in found] == ["1", "2", "3"]


def test_server_bind_address_without_relay_type_is_a_server_config():
    c = parse("# miredo-server.conf\nServerBindAddress 203.0.113.10\nPrefix 2001:0::\n")
    assert c.role == "server"


def one_warning(text, **kw) -> str:
    c = parse(text, **kw)
    assert len(c.warnings) == 1, c.warnings
    return c.warnings[0]


def test_client_relay_type_with_server_directive():
    w = one_warning("RelayType client\nServerAddress 203.0.113.10\nServerBindAddress 203.0.113.1\n")
    assert w == ("t.conf:3: warning: superfluous directive ServerBindAddress: ignored, it applies "
                 "to server only, not to this client config (RelayType client at line 1)")


# --- mode applicability ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("head", "line", "expected"),
    [
        (CLIENT, "Prefix 2001:0::", "Prefix applies to relay and server only"),
        (CLIENT, "InterfaceMTU 1400", "InterfaceMTU applies to relay and server only"),
        (CLIENT, "ServerBindAddress2 203.0.113.11", "ServerBindAddress2 applies to server only"),
        ("RelayType relay\n", "ServerAddress 203.0.113.10", "ServerAddress applies to client only"),
        ("RelayType cone\n", "LocalDiscovery enabled", "LocalDiscovery applies to client only"),
        ("RelayType cone\n", "DiscoveryInterfaces eth", "DiscoveryInterfaces applies to client"),
        ("RelayType cone\n", "DiscoveryNetmask 255.0.0.0", "DiscoveryNetmask applies to client"),
        ("ServerBindAddress 203.0.113.10\n", "InterfaceName teredo",
         "InterfaceName applies to client and relay only"),
        ("ServerBindAddress 203.0.113.10\n", "BindPort 1", "BindPort applies to client and relay"),
        ("ServerBindAddress 203.0.113.10\n", "BindAddress 0.0.0.0", "BindAddress applies to"),
    ],
)
def test_directive_not_for_this_mode(head, line, expected):
    """miredo runs with them ("Superfluous directive"): a warning, and the value is unused."""
    c = parse(head + line + "\n")
    n = head.count("\n") + 1
    assert len(c.warnings) == 1, c.warnings
    assert c.warnings[0].startswith(f"t.conf:{n}: warning: superfluous directive ")
    assert f"ignored, it {expected[expected.index(' ') + 1:]}" in c.warnings[0]
    name = line.split()[0]
    assert c.line_of(name) is None  # not part of the config


def test_superfluous_values_are_not_used_nor_judged():
    c = parse(CLIENT + "Prefix 3ffe:831f::\nInterfaceMTU 99999\n")
    assert c.prefix == 0x20010000 and c.interface_mtu == 1280 and len(c.warnings) == 2
    c = parse("RelayType cone\nServerAddress unresolvable.invalid\nLocalDiscovery bogus\n")
    assert c.server_address is None and c.local_discovery == "disabled"
    assert [w.split(":")[1] for w in c.warnings] == ["2", "3"]


def test_unknown_directive_is_still_an_error_next_to_superfluous_ones():
    p = one_problem("RelayType cone\nServerAddress 203.0.113.10\nPrefx 2001::\n")
    assert p == "t.conf:3: unknown directive 'Prefx' (did you mean Prefix?)"


def test_mode_warning_names_the_mode_and_why():
    w = one_warning(CLIENT + "Prefix 2001:0::\n")
    assert "not to this client config (no RelayType, so client mode)" in w
    w = one_warning("ServerBindAddress 203.0.113.10\nBindPort 5\n")
    assert "server config (ServerBindAddress at line 1 makes it a server config)" in w


@pytest.mark.parametrize("role_line", ["RelayType client\n" + CLIENT, "RelayType relay\n",
                                       "ServerBindAddress 203.0.113.10\n"])
def test_common_directives_in_every_mode(role_line):
    c = parse(role_line + "SyslogFacility local7\nStatusSocket /run/t.sock\n")
    assert c.syslog_facility == "local7" and c.status_socket == "/run/t.sock"


# --- each directive's values -----------------------------------------------------------------

def test_server_address_name_is_resolved_and_kept():
    c = parse("ServerAddress teredo.example.net\n")
    assert c.server_address == "203.0.113.10" and c.server_host == "teredo.example.net"


def test_server_address2_explicit():
    c = parse(CLIENT + "ServerAddress2 198.51.100.9\n")
    assert c.server_address2 == "198.51.100.9" and c.server_host2 == "198.51.100.9"


def test_server_address_must_resolve():
    p = one_problem("ServerAddress nowhere.example.net\n")
    assert p.startswith("t.conf:1: ServerAddress: cannot resolve 'nowhere.example.net'")


@pytest.mark.parametrize("addr", ["10.0.0.1", "127.0.0.1", "192.168.1.1", "172.16.0.1",
                                  "169.254.1.1", "192.88.99.1", "224.0.0.1", "0.1.2.3",
                                  "255.255.255.255"])
def test_server_address_must_be_global(addr):
    p = one_problem(f"ServerAddress {addr}\n")
    assert p == (f"t.conf:1: ServerAddress: {addr} cannot be a Teredo server address: "
                 "not a global unicast IPv4 address")


@pytest.mark.parametrize("addr", ["192.0.2.1", "100.64.0.1", "198.18.0.1", "240.0.0.1"])
def test_miredo_accepts_these_as_global(addr):
    assert parse(f"ServerAddress {addr}\n").server_address == addr


def test_server_name_resolving_to_private_names_both():
    p = one_problem("ServerAddress private.example.net\n")
    assert "private.example.net (10.1.2.3) cannot be a Teredo server address" in p


def test_server_address2_must_be_global():
    p = one_problem(CLIENT + "ServerAddress2 10.0.0.2\n")
    assert p.startswith("t.conf:2: ServerAddress2: 10.0.0.2 cannot be")


def test_server_address_required_in_client_mode():
    p = one_problem("RelayType client\nInterfaceName teredo\n")
    assert p == ("t.conf: ServerAddress is required in client mode "
                 "(or give a server name on the command line)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("enabled", "enabled"), ("FORCED", "forced"), ("Disabled", "disabled")],
)
def test_local_discovery(value, expected):
    c = parse(CLIENT + f"LocalDiscovery {value}\n")
    assert c.local_discovery == expected
    assert c.discovery_enabled == (expected != "disabled")
    assert c.discovery_includes_global == (expected == "forced")
    assert bool(c.warnings) == (expected == "forced")  # forced differs from miredo: say so


def test_local_discovery_bad():
    p = one_problem(CLIENT + "LocalDiscovery yes\n")
    assert p.startswith("t.conf:2: LocalDiscovery: expected one of enabled, forced, disabled")


def test_discovery_interfaces_and_netmask():
    c = parse(CLIENT + "DiscoveryInterfaces ^eth[0-9]\nDiscoveryNetmask 255.255.0.0\n")
    assert isinstance(c.discovery_interfaces, re.Pattern)
    assert c.discovery_interfaces.search("eth1") and not c.discovery_interfaces.search("wlan0")
    assert c.discovery_netmask == "255.255.0.0"
    assert one_problem(CLIENT + "DiscoveryInterfaces (eth\n").startswith(
        "t.conf:2: DiscoveryInterfaces: invalid regular expression")
    assert one_problem(CLIENT + "DiscoveryNetmask 300.0.0.0\n").startswith(
        "t.conf:2: DiscoveryNetmask: expected a dotted IPv4 netmask")


def test_prefix():
    c = parse("RelayType relay\nPrefix 3ffe:831f::\n")
    assert c.prefix == 0x3FFE831F and c.warnings == ()
    c = parse("RelayType relay\nPrefix 2001:db8:1::\n")
    assert c.prefix == 0x20010DB8
    assert c.warnings == ("t.conf:2: warning: Prefix: only the first 32 bits are used "
                          "(2001:db8::/32)",)
    assert one_problem("RelayType relay\nPrefix ff05::\n").startswith(
        "t.conf:2: Prefix: ff05:: is a multicast prefix")
    assert one_problem("RelayType relay\nPrefix 2001\n").startswith(
        "t.conf:2: Prefix: expected an IPv6 address")


def test_interface_mtu():
    assert parse("RelayType relay\nInterfaceMTU 1500\n").interface_mtu == 1500
    assert parse("RelayType relay\nInterfaceMTU 0x5dc\n").interface_mtu == 1500
    assert parse("ServerBindAddress 203.0.113.10\nInterfaceMTU 65535\n").interface_mtu == 65535
    assert one_problem("RelayType relay\nInterfaceMTU 1000\n").startswith(
        "t.conf:2: InterfaceMTU: MTU 1000 is out of range (expected 1280-65535")
    assert one_problem("RelayType relay\nInterfaceMTU 65536\n").startswith(
        "t.conf:2: InterfaceMTU: 65536 is out of range")
    assert one_problem("RelayType relay\nInterfaceMTU 1500b\n").startswith(
        "t.conf:2: InterfaceMTU: expected an integer")


def test_interface_name():
    assert parse(CLIENT + "InterfaceName teredo0\n").interface_name == "teredo0"
    assert one_problem(CLIENT + "InterfaceName teredo-tunnel-0001\n").startswith(
        "t.conf:2: InterfaceName: interface name 'teredo-tunnel-0001' is 18 bytes long")


def test_bind_address_and_port():
    c = parse("RelayType cone\nBindAddress relay.example.net\nBindPort 03545\n")
    assert (c.bind_address, c.bind_port) == ("203.0.113.20", 0o3545)
    c = parse("RelayType cone\nBindAddress 198.18.0.2\nBindPort 0xdd9\n")
    assert (c.bind_address, c.bind_port) == ("198.18.0.2", 3545)  # private is fine to bind
    assert one_problem("RelayType cone\nBindPort 65536\n") == (
        "t.conf:2: BindPort: 65536 is out of range (expected 0-65535)")
    assert one_problem("RelayType cone\nBindPort 35x\n").startswith(
        "t.conf:2: BindPort: expected an integer")
    assert one_problem("RelayType cone\nBindAddress no.such.host\n").startswith(
        "t.conf:2: BindAddress: cannot resolve 'no.such.host'")


def test_syslog_facility():
    assert parse(CLIENT + "SyslogFacility LOCAL0\n").syslog_facility == "local0"
    p = one_problem(CLIENT + "SyslogFacility local9\n")
    assert p.startswith("t.conf:2: SyslogFacility: expected one of auth, authpriv, cron, daemon")
    assert "uucp" in p


def test_status_socket():
    assert one_problem(CLIENT + "StatusSocket run/x.sock\n").startswith(
        "t.conf:2: StatusSocket: expected an absolute path")


def test_server_bind_addresses():
    c = parse("ServerBindAddress 203.0.113.10\nServerBindAddress2 203.0.113.50\n")
    assert (c.server_bind_address, c.server_bind_address2) == ("203.0.113.10", "203.0.113.50")
    c = parse("ServerBindAddress teredo.example.net\n")
    assert (c.server_bind_address, c.server_bind_address2) == ("203.0.113.10", "203.0.113.11")


def test_server_bind_address_must_be_global():
    assert one_problem("ServerBindAddress 192.168.0.1\n").startswith(
        "t.conf:1: ServerBindAddress: 192.168.0.1 cannot be")
    assert one_problem("ServerBindAddress 203.0.113.10\nServerBindAddress2 10.0.0.1\n").startswith(
        "t.conf:2: ServerBindAddress2: 10.0.0.1 cannot be")


def test_server_secondary_default_must_be_global():
    p = one_problem("ServerBindAddress 192.88.98.255\n")
    assert p.startswith("t.conf:1: ServerBindAddress: the secondary address primary+1 "
                        "(192.88.99.0) is not a global")


def test_server_addresses_must_differ():
    p = one_problem("ServerBindAddress 203.0.113.10\nServerBindAddress2 203.0.113.10\n")
    assert p.startswith("t.conf:2: ServerBindAddress2: 203.0.113.10 is the primary address too")


def test_server_address_required_in_server_mode():
    assert one_problem("RelayType server\n") == (
        "t.conf: ServerBindAddress is required in server mode "
        "(or give the server address on the command line)")


# --- the command-line server name ------------------------------------------------------------

def test_cli_server_name_overrides_client_server_address():
    c = parse("ServerAddress 203.0.113.10\nServerAddress2 203.0.113.99\n",
              server_name="relay.example.net")
    assert c.server_address == "203.0.113.20" and c.server_host == "relay.example.net"
    assert c.server_address2 == "203.0.113.21"  # the file's secondary went with its primary
    assert c.server_from_cli


def test_cli_server_name_makes_server_address_optional():
    assert parse("RelayType client\n", server_name="198.51.100.1").server_address == "198.51.100.1"


def test_cli_server_name_does_not_resolve_the_overridden_directive():
    c = parse("ServerAddress stale.example.net\n", server_name="203.0.113.10")
    assert c.server_address == "203.0.113.10"


def test_cli_server_name_still_syntax_checks_the_file():
    p = one_problem("ServerAddress bad_name!\n", server_name="203.0.113.10")
    assert p.startswith("t.conf:1: ServerAddress: expected an IPv4 address or a host name")


def test_cli_server_name_overrides_server_bind_addresses():
    text = "ServerBindAddress 203.0.113.10\nServerBindAddress2 203.0.113.50\n"
    c = parse(text, server_name="198.51.100.8")
    assert (c.server_bind_address, c.server_bind_address2) == ("198.51.100.8", "198.51.100.9")


def test_cli_server_name_errors():
    assert one_problem(CLIENT, server_name="10.0.0.1") == (
        "t.conf: server name from the command line: 10.0.0.1 cannot be a Teredo server "
        "address: it is not a global unicast IPv4 address")
    assert one_problem(CLIENT, server_name="nowhere.example.net").startswith(
        "t.conf: server name from the command line: cannot resolve 'nowhere.example.net'")


def test_cli_server_name_is_not_used_by_a_relay():
    c = parse("RelayType relay\n", server_name="203.0.113.10")
    assert c.server_address is None and not c.server_from_cli


# --- names, duplicates, unknown directives ---------------------------------------------------

def test_names_are_case_insensitive():
    c = parse("relaytype CLIENT\nSERVERADDRESS 203.0.113.10\nbindport 7\ninterfacename Te\n")
    assert c.relay_type == "client" and c.bind_port == 7 and c.interface_name == "Te"
    assert dict(c.lines) == {"RelayType": 1, "ServerAddress": 2, "BindPort": 3,
                             "InterfaceName": 4}
    assert c.line_of("bindport") == 3 and c.where("BINDPORT") == "t.conf:3"
    assert c.line_of("Prefix") is None and c.where("Prefix") == "t.conf"


def test_unknown_directive_with_suggestion():
    assert one_problem(CLIENT + "ServerAdress2 203.0.113.11\n") == (
        "t.conf:2: unknown directive 'ServerAdress2' (did you mean ServerAddress2?)")
    assert one_problem(CLIENT + "interfacemut 1400\n") == (
        "t.conf:2: unknown directive 'interfacemut' (did you mean InterfaceMTU?)")


def test_unknown_directive_without_suggestion():
    assert one_problem(CLIENT + "Frobnicate yes\n") == "t.conf:2: unknown directive 'Frobnicate'"


def test_duplicates_warn_and_the_first_wins():
    c = parse("ServerAddress 203.0.113.10\n\n# x\nserveraddress 203.0.113.12\n")
    assert c.server_address == "203.0.113.10" and dict(c.lines) == {"ServerAddress": 1}
    assert c.warnings == ("t.conf:4: warning: superfluous directive ServerAddress: ignored, "
                          "the one at line 1 is used",)


# --- syntax ----------------------------------------------------------------------------------

def test_comments_and_blank_lines():
    c = parse("# comment\n   # indented comment\n\n \t \n#ServerAddress 10.0.0.1\n" + CLIENT)
    assert dict(c.lines) == {"ServerAddress": 6}


def test_comment_after_value():
    c = parse("ServerAddress 203.0.113.10 # the lab server\nBindPort 3545\t#fixed\n")
    assert c.bind_port == 3545 and c.warnings == ()


def test_trailing_junk_is_ignored_with_a_warning():
    c = parse("ServerAddress 203.0.113.10 203.0.113.11 more\n")
    assert c.server_address == "203.0.113.10"
    assert c.warnings == ("t.conf:1: warning: ServerAddress: ignoring '203.0.113.11 more' after "
                          "the value (only the first word is used; start a comment with '#')",)


def test_hash_as_value_is_not_a_comment():
    assert one_problem(CLIENT + "InterfaceName #teredo\n") == (
        "t.conf:2: InterfaceName: missing value (expected an interface name of at most 15 "
        "bytes); '#' starts a comment only at the beginning of a line")


def test_missing_value():
    assert one_problem(CLIENT + "BindPort\n") == (
        "t.conf:2: BindPort: missing value (expected a UDP port number, 0-65535)")


def test_whitespace_variants():
    c = parse("\tServerAddress\t\t203.0.113.10  \r\n  BindPort \v 9 \f\n")
    assert c.server_address == "203.0.113.10" and c.bind_port == 9


def test_last_line_without_newline_is_used():
    c = parse("RelayType relay\nBindPort 3545")
    assert c.bind_port == 3545
    assert c.warnings == ("t.conf:2: warning: the last line has no newline at its end; it is "
                          "used here, but miredo would ignore it",)
    assert parse("RelayType relay\n# comment").warnings == ()


def test_last_line_without_newline_errors_point_at_it():
    assert one_problem("RelayType relay\nBindPort 70000") == (
        "t.conf:2: BindPort: 70000 is out of range (expected 0-65535)")


def test_overlong_line():
    long_comment = "#" + "x" * 1060
    p = one_problem(CLIENT + long_comment + "\n")
    assert p.startswith("t.conf:2: line too long (1062 bytes with its newline; at most 1055 fit")


def test_line_length_boundary():
    # 1054 characters plus the newline fit miredo's 1056-byte buffer; one more does not.
    fits = "# " + "x" * 1052
    assert len(fits) == 1054
    assert parse(CLIENT + fits + "\n").server_address == "203.0.113.10"
    assert problems(CLIENT + fits + "x\n")[0].startswith("t.conf:2: line too long (1056 bytes")


def test_long_name_and_value():
    assert one_problem(CLIENT + "X" * 32 + " 1\n").startswith("t.conf:2: directive name")
    assert one_problem(CLIENT + "InterfaceName " + "x" * 1024 + "\n").startswith(
        "t.conf:2: InterfaceName: value is longer than 1023 bytes")


def test_not_utf8():
    p = one_problem(CLIENT.encode() + b"InterfaceName te\xffdo\n")
    assert p == "t.conf:2: line is not valid UTF-8 text"


def test_all_problems_in_line_order():
    text = ("RelayType client\nServerAdress 203.0.113.10\nPrefix ff00::\nBindPort 70000\n"
            "ServerAddress 10.1.1.1\nInterfaceName abcdefghijklmnopq\nSyslogFacility foo\n"
            "relaytype relay\n")
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert [int(p.split(":")[1]) for p in e.value.problems] == [2, 4, 5, 6, 7]
    # the superfluous Prefix (client mode) and the second RelayType come along as warnings
    assert [int(w.split(":")[1]) for w in e.value.warnings] == [3, 8]


def test_empty_file_is_a_client_without_server():
    assert problems("") == ["t.conf: ServerAddress is required in client mode "
                            "(or give a server name on the command line)"]


# --- load_config ---------------------------------------------------------------------------

def test_load_config_reads_the_file(tmp_path):
    path = tmp_path / "m.conf"
    path.write_text("RelayType cone\nBindPort 3545\n")
    c = load_config(str(path))
    assert c.role == "relay" and c.path == str(path) and c.line_of("BindPort") == 2


def test_load_config_missing_file(tmp_path):
    path = str(tmp_path / "none.conf")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: cannot read the config file: No such file or directory"]


def test_load_config_missing_file_with_server_name(tmp_path):
    path = str(tmp_path / "none.conf")
    c = load_config(path, server_name="203.0.113.10", resolver=fake_resolver)
    assert c.role == "client" and c.server_address == "203.0.113.10"
    assert c.warnings == (f"{path}: warning: no such file; using the defaults",)


def test_load_config_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path))
