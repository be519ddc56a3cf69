"""Host facts (parent -> worker): what the parent learnt over rtnetlink, checked field by field
and applied to a real worker's role (`engine.runtime.hostfacts`)."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest

from engine.proto.client import ClientRole
from engine.proto.relay import RelayRole
from engine.runtime import channel
from engine.runtime.channel import DiscoveryInterfaces, IcmpSources, RequestError
from engine.runtime.worker import Worker, WorkerResources


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def line(**kw) -> bytes:
    return json.dumps(kw).encode()


def test_messages_round_trip():
    srcs = [a6("2001:db8:1::20"), a6("fd00::1")]
    msg = channel.icmp_sources_message(srcs)
    assert msg.endswith(b"\n")
    assert channel.parse_host_fact(msg.rstrip(b"\n")) == IcmpSources(tuple(srcs))
    ifaces = [("eth0", "198.18.0.2", "255.255.255.0"), ("wlan0", "192.0.2.7", "255.255.0.0")]
    got = channel.parse_host_fact(channel.discovery_message(ifaces).rstrip(b"\n"))
    assert got == DiscoveryInterfaces(tuple(ifaces))
    assert channel.parse_host_fact(channel.icmp_sources_message([]).rstrip()) == IcmpSources(())


def test_lists_are_capped():
    many = [a6(f"2001:db8::{i:x}") for i in range(channel.MAX_FACTS + 10)]
    got = channel.parse_host_fact(channel.icmp_sources_message(many).rstrip(b"\n"))
    assert isinstance(got, IcmpSources) and got.addresses == tuple(many[: channel.MAX_FACTS])


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        (b"[1]", "fact: not a JSON object"),
        (b"{nope", "fact: not JSON"),
        (line(op="kick"), "op: unknown fact 'kick'"),
        (line(op="icmp_sources"), "missing keys ['addresses']"),
        (line(op="icmp_sources", addresses=[], extra=1), "unexpected keys ['extra']"),
        (line(op="icmp_sources", addresses="2001:db8::1"), "icmp_sources.addresses: not a list"),
        (line(op="icmp_sources", addresses=["2001:db8::1", "fe80::1"]),
         "icmp_sources.addresses[1]: fe80::1 is not a unicast address"),
        (line(op="icmp_sources", addresses=["ff02::1"]), "addresses[0]: ff02::1 is not"),
        (line(op="icmp_sources", addresses=["::1"]), "addresses[0]: ::1 is not"),
        (line(op="icmp_sources", addresses=["198.51.100.1"]), "is not an IPv6 address"),
        (line(op="icmp_sources", addresses=[7]), "addresses[0]: not an IPv6 address string"),
        (line(op="discovery", interfaces=[["eth0", "198.18.0.2"]]),
         "discovery.interfaces[0]: not a [name, ipv4, netmask] list"),
        (line(op="discovery", interfaces=[["", "198.18.0.2", "255.0.0.0"]]),
         "interfaces[0].name: '' is not an interface name"),
        (line(op="discovery", interfaces=[["a" * 16, "198.18.0.2", "255.0.0.0"]]),
         "is not an interface name"),
        (line(op="discovery", interfaces=[["eth0", "198.18.0.256", "255.0.0.0"]]),
         "interfaces[0].ipv4: '198.18.0.256' is not an IPv4 address"),
        (line(op="discovery", interfaces=[["eth0", "198.18.0.2", "255.0.255.0"]]),
         "interfaces[0].netmask: '255.0.255.0' is not a netmask"),
        (line(op="discovery", interfaces=[["eth0", "198.18.0.2", "24"]]),
         "is not a dotted netmask"),
        (b"x" * (channel.MAX_FACT_LINE + 1), "longer than"),
    ],
)
def test_bad_facts_are_refused_with_the_field(msg, needle):
    with pytest.raises(RequestError, match=None) as ei:
        channel.parse_host_fact(msg)
    assert needle in str(ei.value)


NOW = 50.0


class Harness:
    """A real worker (loopback UDP socket, no TUN); facts arrive on its control socket."""

    def __init__(self, role) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.control, control_child = socket.socketpair()
        self.worker = Worker(None, role, WorkerResources(udp=[self.udp], control=control_child),
                             clock=lambda: NOW)
        self._child = control_child

    def send(self, data: bytes) -> None:
        self.control.sendall(data)
        self.worker.loop.run_once(max_wait=1.0)

    def close(self) -> None:
        self.worker.close()
        for s in (self.udp, self.control, self._child):
            s.close()


def test_relay_worker_takes_its_icmp_sources():
    relay = RelayRole(relay_type="cone", token_bytes=bytes)
    h = Harness(relay)
    try:
        h.send(channel.icmp_sources_message([a6("2001:db8:1::20"), a6("2001:db8:2::20")]))
        assert relay.status()["icmp_sources"] == ["2001:db8:1::20", "2001:db8:2::20"]
        # a bad line is logged and skipped; the next good one still applies
        h.send(line(op="icmp_sources", addresses=["fe80::1"]) + b"\n"
               + channel.icmp_sources_message([a6("2001:db8:3::1")]))
        assert relay.status()["icmp_sources"] == ["2001:db8:3::1"]
    finally:
        h.close()


def test_client_gets_discovery_interfaces_late_and_announces_at_once():
    """The parent lists discovery interfaces after the fork; a client that qualified before
    they arrived must not wait 200-299 s for its first announcement."""
    client = ClientRole(server="203.0.113.10", now=10.0, ping_ident=1, local_discovery=True,
                        discovery_include_global=True,
                        randbits=lambda n: 0)
    client.discovery.start(10.0)  # what qualifying does...
    client.up = True
    client.address = a6("2001:0:cb00:710a:8000:f227:bdf7:ffef")
    assert client.discovery.due(10.0)  # ...its announcement found no interface
    assert client.discovery.next_timer() == 210.0  # and the next round is minutes away
    h = Harness(client)
    try:
        h.send(channel.discovery_message([("eth0", "198.18.0.2", "255.255.255.0")]))
        assert h.worker.res.discovery == [("eth0", "198.18.0.2", "255.255.255.0")]
        assert client.status()["discovery"]["interfaces"] == ["eth0"]
        # the round restarted at NOW and its announcement went out: the next one is due at
        # NOW + 200 s, not at 210
        assert client.discovery.next_timer() == NOW + 200.0
    finally:
        h.close()


def test_discovery_list_before_qualification_changes_no_timer():
    client = ClientRole(server="203.0.113.10", now=10.0, ping_ident=1, local_discovery=True,
                        discovery_include_global=True,
                        randbits=lambda n: 0)
    h = Harness(client)
    try:
        h.send(channel.discovery_message([("eth0", "198.18.0.2", "255.255.255.0")]))
        assert client.status()["discovery"]["interfaces"] == ["eth0"]
        assert client.discovery.next_timer() is None  # starts with the first qualification
    finally:
        h.close()
