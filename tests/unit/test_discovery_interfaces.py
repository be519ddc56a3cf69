"""Which interfaces a client runs local discovery on (spec §9)."""

from __future__ import annotations

import re

from engine.runtime.discovery_select import IFF_MULTICAST, select_discovery
from engine.runtime.netlink import Address, Link

UP = 0x1 | 0x40


def addr(index: int, ip: str, plen: int = 24) -> Address:
    return Address(index, ip, plen)


LINKS = [Link(1, "lo", UP | 0x8), Link(2, "eth0", UP | IFF_MULTICAST),
         Link(3, "wg0", UP),  # point-to-point VPN: no multicast
         Link(4, "wlan0", UP | IFF_MULTICAST)]
ADDRS = [addr(1, "127.0.0.1", 8), addr(2, "198.18.0.2"), addr(2, "198.18.5.2", 16),
         addr(3, "198.19.0.9", 32), addr(4, "203.0.113.7")]


def test_multicast_interfaces_only_and_no_loopback():
    assert select_discovery(LINKS, ADDRS, None) == [
        ("eth0", "198.18.0.2", "255.255.255.0"), ("eth0", "198.18.5.2", "255.255.0.0"),
        ("wlan0", "203.0.113.7", "255.255.255.0")]


def test_discovery_interfaces_pattern_is_unanchored():
    assert [n for n, _, _ in select_discovery(LINKS, ADDRS, re.compile("lan"))] == ["wlan0"]
    assert select_discovery(LINKS, ADDRS, re.compile("^wg")) == []
