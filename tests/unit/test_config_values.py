"""Value parsers of engine.config: strtoul base 0, addresses, prefixes, names, regexes."""

import pytest

from engine.config import values as v


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3545", (3545, 4)),
        ("0x0DD9", (3545, 6)),
        ("0X0dd9", (3545, 6)),
        ("06731", (3545, 5)),
        ("0", (0, 1)),
        ("+7", (7, 2)),
        ("08", (0, 1)),  # octal: the 8 is junk
        ("0x", (0, 1)),  # "0" then junk "x", as glibc does
        ("0xg", (0, 1)),
        ("abc", (0, 0)),
        ("-", (0, 0)),
        ("12ab", (12, 2)),
        ("-1", ((1 << 64) - 1, 2)),
        ("-0", (0, 2)),
    ],
)
def test_strtoul0(text, expected):
    assert v.strtoul0(text) == expected


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("65535", 65535), ("0xffff", 65535),
                                             ("0177777", 65535), ("010", 8), ("-0", 0)])
def test_int16_accepts(text, value):
    assert v.parse_int16(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("65536", "out of range"),
        ("0x10000", "out of range"),
        ("-1", "out of range"),
        ("12ab", "expected an integer"),
        ("08", "expected an integer"),
        ("port", "expected an integer"),
        ("1e3", "expected an integer"),
    ],
)
def test_int16_rejects(text, message):
    with pytest.raises(v.BadValue, match=message):
        v.parse_int16(text)


def test_mtu_range():
    assert v.parse_mtu("1280") == 1280
    assert v.parse_mtu("65535") == 65535
    assert v.parse_mtu("0x500") == 1280
    with pytest.raises(v.BadValue, match="1280-65535"):
        v.parse_mtu("1279")
    with pytest.raises(v.BadValue, match="out of range"):
        v.parse_mtu("70000")


@pytest.mark.parametrize(
    ("text", "ip"),
    [("203.0.113.10", "203.0.113.10"), ("127.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
     ("3405803786", "203.0.113.10")],
)
def test_ipv4_literals_need_no_resolver(text, ip):
    def refuse(host):
        raise AssertionError(f"resolver called for a literal {host}")

    assert v.parse_ipv4_host(text, refuse) == ip


def test_hostname_goes_through_the_resolver():
    asked = []

    def fake(host):
        asked.append(host)
        return "198.51.100.7"

    assert v.parse_ipv4_host("teredo.example.net", fake) == "198.51.100.7"
    assert asked == ["teredo.example.net"]


def test_hostname_without_resolver_is_only_syntax_checked():
    assert v.parse_ipv4_host("teredo.example.net", None) == "teredo.example.net"
    with pytest.raises(v.BadValue, match="IPv4 address or a host name"):
        v.parse_ipv4_host("bad_name!", None)


def test_resolver_failure_is_a_bad_value():
    def fail(host):
        raise OSError(-2, "Name or service not known")

    with pytest.raises(v.BadValue, match=r"cannot resolve 'nowhere.invalid'.*not known"):
        v.parse_ipv4_host("nowhere.invalid", fail)


@pytest.mark.parametrize("text", ["256.1.1.1", "1.2.3.4.5", "1..2", "::1", "-host"])
def test_ipv4_host_rejects(text):
    with pytest.raises(v.BadValue):
        v.parse_ipv4_host(text, lambda h: "192.0.2.1")


def test_resolver_answer_must_be_ipv4():
    with pytest.raises(v.BadValue, match="not an IPv4"):
        v.parse_ipv4_host("x.example", lambda h: "2001:db8::1")


def test_netmask():
    assert v.parse_netmask("255.255.255.0") == "255.255.255.0"
    with pytest.raises(v.BadValue, match="netmask"):
        v.parse_netmask("lan.example")


@pytest.mark.parametrize(
    ("text", "prefix", "more"),
    [("2001:0::", 0x20010000, False), ("2001::", 0x20010000, False),
     ("3ffe:831f::", 0x3FFE831F, False), ("2001:db8:1::1", 0x20010DB8, True),
     ("fe80::", 0xFE800000, False)],
)
def test_prefix(text, prefix, more):
    assert v.parse_prefix(text) == (prefix, more)


@pytest.mark.parametrize(
    ("text", "message"),
    [("ff02::", "multicast"), ("ff00::", "multicast"), ("2001::/32", "no /length"),
     ("fe80::1%eth0", "no %zone"), ("203.0.113.1", "IPv6 address"), ("teredo", "IPv6 address")],
)
def test_prefix_rejects(text, message):
    with pytest.raises(v.BadValue, match=message):
        v.parse_prefix(text)


def test_facility_is_case_insensitive_and_lists_the_valid_ones():
    assert v.parse_facility("LOCAL3") == "local3"
    with pytest.raises(v.BadValue) as e:
        v.parse_facility("local8")
    for name in v.SYSLOG_FACILITIES:
        assert name in str(e.value)


def test_ifname():
    assert v.parse_ifname("teredo") == "teredo"
    assert v.parse_ifname("a" * 15) == "a" * 15
    with pytest.raises(v.BadValue, match="16 bytes long; Linux allows at most 15"):
        v.parse_ifname("a" * 16)
    for bad in (".", "..", "a/b", "eth0:1"):
        with pytest.raises(v.BadValue, match="not a valid interface name"):
            v.parse_ifname(bad)


def test_regex_is_unanchored_and_posix_classes_work():
    r = v.parse_regex("^(eth|wl)[[:digit:]]")
    assert r.search("eth0") and r.search("wl1") and not r.search("ethx") and not r.search("veth0")
    assert v.parse_regex("eth").search("veth0")
    with pytest.raises(v.BadValue, match="unknown character class"):
        v.parse_regex("[[:foo:]]")
    with pytest.raises(v.BadValue, match="invalid regular expression"):
        v.parse_regex("(eth")


def test_socket_path():
    assert v.parse_socket_path("/run/x.sock") == "/run/x.sock"
    with pytest.raises(v.BadValue, match="absolute"):
        v.parse_socket_path("x.sock")
    with pytest.raises(v.BadValue, match="107"):
        v.parse_socket_path("/" + "a" * 107)
