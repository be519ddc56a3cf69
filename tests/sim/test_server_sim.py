"""ServerRole in the simulated network: NAT behaviour of its replies, forwarding between clients
behind NATs, ping tests to native IPv6, and that spoofed traffic cannot use it as a reflector."""

from __future__ import annotations

import random

import pytest

from engine.proto.addr import LL_CLIENT, LL_CONE, ipv6_pack
from engine.proto.qualify import Qualifier
from engine.proto.server import ServerRole
from engine.proto.wire import (
    Origin,
    bubble,
    build_datagram,
    echo_request,
    parse_datagram,
    router_solicitation,
)
from tests.sim.simnet import NAT_KINDS, SimNet, UdpProbe

S1, S1B = "203.0.113.10", "203.0.113.11"
NATIVE = ipv6_pack("2001:db8::1")


class MiniClient:
    """The smallest Teredo client that can qualify and exchange bubbles: a Qualifier plus a
    record of every other datagram, with shared output lists (as the client role composes it)."""

    def __init__(self, server: str, now: float, seed: int) -> None:
        r = random.Random(seed)
        self.udp_out: list = []
        self.events: list = []
        self.q = Qualifier(server, now=now, token_bytes=r.randbytes, randbits=r.getrandbits,
                           udp_out=self.udp_out, events=self.events)
        self.got: list = []

    def receive_datagram(self, data, src, sock, now):
        t = parse_datagram(data)
        if Qualifier.is_candidate(t, src):
            self.q.handle_ra(t, src, now)
        else:
            self.got.append((t, src))

    def next_timer(self):
        return self.q.next_timer()

    def handle_timer(self, now):
        self.q.handle_timer(now)

    def send(self, ipv6: bytes, dst) -> None:
        self.udp_out.append((0, ipv6, dst))


def server_world(trace: bool = True) -> tuple[SimNet, ServerRole]:
    net = SimNet(seed=4, trace=trace)
    srv = ServerRole(S1, S1B, now=net.now)
    net.attach(srv, net.add_host(S1, S1B, name="server"), {0: (S1, 3544), 1: (S1B, 3544)},
               name="server")
    return net, srv


# -- the reply-address rule (§7.3) seen through NATs --------------------------------------------


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_cone_rs_answer_from_the_other_address_only_passes_a_full_cone(kind):
    net, srv = server_world()
    nat = net.add_nat(kind, "198.51.100.7")
    probe = UdpProbe()
    net.attach(probe, net.add_host("198.18.0.2", realm=nat))
    probe.send(router_solicitation(b"conecone", src=LL_CONE), (S1, 3544))
    net.run_for(1)
    (ra,) = [e for e in net.trace if e.sender == "server"]
    assert ra.src == (S1B, 3544)  # the RA left from the secondary address
    assert srv.handled["ra_sent"] == 1
    if kind == "full_cone":
        ((data, src, _, _),) = probe.received
        assert src == (S1B, 3544) and parse_datagram(data).ipv6[24:40] == LL_CONE
    else:
        assert probe.received == [] and ra.fate == "nat_filtered"


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_rs_to_the_secondary_is_answered_from_the_secondary(kind):
    net, _ = server_world()
    nat = net.add_nat(kind, "198.51.100.7")
    probe = UdpProbe()
    net.attach(probe, net.add_host("198.18.0.2", realm=nat))
    probe.send(router_solicitation(b"secondry"), (S1B, 3544))
    net.run_for(1)
    ((data, src, _, _),) = probe.received
    t = parse_datagram(data)
    assert src == (S1B, 3544) and t.ipv6[24:40] == LL_CLIENT
    assert t.ipv6[40 + 16 + 20 : 40 + 16 + 24] == bytes([203, 0, 113, 10])  # PIO: primary
    assert t.origin == Origin(*net.attachments[-1].public_address(0, towards=(S1B, 3544)))


# -- forwarding between two clients behind NATs ----------------------------------------------


@pytest.mark.parametrize("kind", ["full_cone", "restricted", "port_restricted"])
def test_indirect_bubble_carries_the_origin_and_lets_two_clients_meet(kind):
    net, srv = server_world()
    nat_a = net.add_nat(kind, "198.51.100.7")
    nat_b = net.add_nat(kind, "198.51.100.8")
    a = MiniClient(S1, net.now, seed=1)
    b = MiniClient(S1, net.now, seed=2)
    net.attach(a, net.add_host("198.18.0.2", realm=nat_a), name="A")
    net.attach(b, net.add_host("198.18.1.2", realm=nat_b), name="B")
    assert net.run_until_true(lambda: a.q.up and b.q.up, timeout=5)

    # A -> server -> B: the indirect bubble arrives from the server with A's mapping as origin
    ind = bubble(a.q.address, b.q.address)
    a.send(ind, (S1, 3544))
    net.run_for(0.5)
    ((t, src),) = b.got
    assert src == (S1, 3544) and t.origin == Origin(*a.q.mapping) and t.ipv6 == ind
    assert srv.handled["forwarded_teredo"] == 1

    # B answers to the origin; A's NAT lets it in only if it is a full cone (A sent nothing to B)
    b.send(bubble(b.q.address, a.q.address), a.q.mapping)
    net.run_for(0.5)
    assert len(a.got) == (1 if kind == "full_cone" else 0)
    # A's direct bubble opens A's NAT towards B (and B's NAT accepts it: B sent to A just now)
    a.send(bubble(a.q.address, b.q.address), b.q.mapping)
    b.send(bubble(b.q.address, a.q.address), a.q.mapping)
    net.run_for(0.5)
    assert any(s == b.q.mapping for _, s in a.got)
    assert any(s == a.q.mapping for _, s in b.got)


def test_symmetric_nat_peer_cannot_be_reached_at_its_advertised_mapping():
    """The known Teredo gap (docs/protocol.md §12.2 #21): the address embeds the mapping towards
    the server only; the symmetric NAT filters the peer's answer sent there."""
    net, _ = server_world()
    a = MiniClient(S1, net.now, seed=1)
    b = MiniClient(S1, net.now, seed=2)
    net.attach(a, net.add_host("198.18.0.2", realm=net.add_nat("symmetric", "198.51.100.7")))
    net.attach(b, net.add_host("198.51.100.8"))
    assert net.run_until_true(lambda: a.q.up and b.q.up, timeout=5)
    a.send(bubble(a.q.address, b.q.address), b.q.mapping)  # opens A's NAT towards B only...
    net.run_for(0.5)
    ((_, seen_src),) = b.got
    assert seen_src != a.q.mapping  # ...from another port
    b.send(bubble(b.q.address, a.q.address), a.q.mapping)
    net.run_for(0.5)
    assert a.got == []


# -- ping tests to native IPv6 -------------------------------------------------------------


def test_ping_test_reaches_the_native_host_as_bare_ipv6():
    net, srv = server_world()
    native = net.ipv6.add_host(NATIVE)
    c = MiniClient(S1, net.now, seed=5)
    net.attach(c, net.add_host("198.18.0.2", realm=net.add_nat("port_restricted", "198.51.100.7")))
    assert net.run_until_true(lambda: c.q.up, timeout=5)
    ping = echo_request(c.q.address, NATIVE, 0x1234, 1, bytes(18))
    c.send(ping + b"trailer", (S1, 3544))
    net.run_for(0.5)
    assert [p for _, p in native.received] == [ping]
    assert srv.handled["forwarded_native"] == 1
    # the echo reply is routed towards the Teredo prefix; no relay here: no route
    assert net.stats["ipv6_no_route"] == 1


# -- not a reflector ---------------------------------------------------------------------------


def test_spoofed_rs_flood_reaches_the_victim_only_at_the_limited_rate():
    net, srv = server_world(trace=False)
    victim = UdpProbe()
    net.attach(victim, net.add_host("198.51.100.200"), {0: 53})
    rs = router_solicitation(b"spoofed!")
    for i in range(10000):  # 1000 RS/s for 10 s, "from" the victim's DNS port
        net.call_at(net.now + i / 1000, lambda now: net.inject(rs, ("198.51.100.200", 53),
                                                               (S1, 3544)))
    net.run_for(11)
    got = len(victim.received)
    assert 50 + 20 * 10 - 2 <= got <= 50 + 20 * 10 + 1
    assert srv.counters.drops["rs_rate_limited"] == 10000 - got


@pytest.mark.parametrize("spoofed", ["10.0.0.1", "127.0.0.1", "192.168.1.1", "224.0.0.1"])
def test_spoofed_non_global_sources_get_no_answer(spoofed):
    net, srv = server_world()
    net.inject(router_solicitation(b"12345678"), (spoofed, 1000), (S1, 3544))
    net.run_for(1)
    assert [e for e in net.trace if e.sender == "server"] == []
    assert srv.counters.drops == {"s3_source_not_global": 1}


def test_native_to_native_through_the_server_goes_nowhere():
    net, srv = server_world()
    target = net.ipv6.add_host(ipv6_pack("2001:db8::2"))
    relay_like = UdpProbe()
    net.attach(relay_like, net.add_host("203.0.113.5"), {0: 3545})
    for pkt in (
        echo_request(NATIVE, target.address, 1, 1, b"x"),
        bubble(NATIVE, target.address),
        build_datagram(bubble(ipv6_pack("fe80::1"), target.address), origin=Origin("1.2.3.4", 1)),
    ):
        relay_like.send(pkt, (S1, 3544))
    net.run_for(1)
    assert target.received == [] and net.ipv6.log == []
    assert srv.counters.drops == {"s7_not_for_us": 3}
