"""Client: ping-test limits (T6) and local discovery (§9, R5/R9c/T7) between two clients
behind the same NAT.  The simulated network carries no multicast, so the test hands the
announcement a client emitted (socket 2) to the other client as the runtime's discovery socket
would; everything after that is unicast through the network."""

from __future__ import annotations

from engine.proto.client import ClientRole
from engine.proto.discovery import DISCOVERY_DEST, DISCOVERY_SOCK
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.wire import build_ipv6, echo_request
from tests.sim.simnet import SimNet
from tests.sim.test_client_paths import NATIVE, SRV1, SRV2, Lab, _bits, _tokens


def test_pings_stop_after_four_and_unreachable_follows():
    lab = Lab()
    lab.host.auto_echo = False  # a host that never answers
    net, c, att = lab.net, lab.clients[0], lab.atts[0]
    start = int(net.now) + 1
    pings = []
    for s in range(14):
        net.run_until(start + s + 0.5)
        before = lab.server.handled["forwarded_native"]
        net.tun_send(att, echo_request(c.address, NATIVE, 5, s, b""))
        net.run_for(0.1)
        if lab.server.handled["forwarded_native"] > before:
            pings.append(s)
    assert pings == [0, 3, 6, 9]
    errs = [p for _, p in att.tun_log if p[40] == 1 and p[41] == 3]
    assert errs and c.counters.drops["ping_limit"] == len(errs)


def _two_on_one_lan():
    net = SimNet(seed=9)
    server = ServerRole(SRV1, SRV2, limits=ServerLimits.unlimited(), now=net.now)
    net.attach(server, net.add_host(SRV1, SRV2), {0: (SRV1, 3544), 1: (SRV2, 3544)})
    nat = net.add_nat("port_restricted", "198.51.100.1")
    cs, atts = [], []
    for i in range(2):
        c = ClientRole(server=SRV1, token_bytes=_tokens(40 + i), randbits=_bits(4 + i),
                       local_discovery=True, discovery_include_global=True, now=net.now)
        # 198.18/15 counts as global in miredo's table, so the lab LAN needs "forced"
        c.set_discovery_interfaces([("eth0", f"198.18.0.{2 + i}", "255.255.255.0")])
        cs.append(c)
        # socket 2 is the discovery socket (multicast is not routed by the simulated network)
        atts.append(net.attach(c, net.add_host(f"198.18.0.{2 + i}", realm=nat), {0: 0, 2: 3544}))
    assert net.run_until_true(lambda: all(c.up for c in cs), 10)
    return net, cs, atts


def test_local_discovery_then_direct_lan_traffic():
    net, (a, b), (att_a, att_b) = _two_on_one_lan()
    assert [n for n, _, _ in a.discovery.interfaces] == ["eth0"]
    # a's announcement, as b's discovery socket would receive it
    b.receive_datagram(_announcement(a), att_a.address(0), DISCOVERY_SOCK, net.now)
    pa = b.peers.get(a.address)
    assert pa is not None and pa.local and pa.mapping == att_a.address(0)
    net.run_for(0.5)  # b's unicast bubble reaches a over the LAN: R9c makes b a local peer
    pb = a.peers.get(b.address)
    assert pb is not None and pb.local and pb.trusted and pb.mapping == att_b.address(0)
    # data a -> b goes straight over the LAN (T5, local peer valid for 600 s)
    pkt = build_ipv6(a.address, b.address, 17, b"lan")
    net.run_for(500)
    net.tun_send(att_a, pkt)
    net.run_for(0.5)
    assert [p for _, p in att_b.tun_log] == [pkt]


def _announcement(c: ClientRole) -> bytes:
    """The discovery bubble ``c`` emits on socket 2 (its periodic round, forced now)."""
    c.udp_out.clear()
    c._announce()
    (sock, payload, dst), = c.udp_out
    c.udp_out.clear()
    assert (sock, dst) == (DISCOVERY_SOCK, DISCOVERY_DEST)
    assert payload[24:40] == bytes.fromhex("ff020000000000000000000000000001")
    assert payload[8:24] == c.address and payload[7] == 0
    return payload


def test_discovery_bubble_from_another_public_ip_is_not_local():
    net, (a, b), _ = _two_on_one_lan()
    payload = _announcement(a)
    b.receive_datagram(payload, ("198.18.7.7", 3544), DISCOVERY_SOCK, net.now)  # off-subnet
    assert b.peers.get(a.address) is None
    assert b.counters.drops["discovery_not_local"] == 1


def test_enabled_discovery_skips_global_addresses():
    c = ClientRole(server=SRV1, token_bytes=_tokens(1), randbits=_bits(1), local_discovery=True)
    c.set_discovery_interfaces([("lan", "198.18.0.2", "255.255.255.0"),
                                ("wan", "203.0.113.99", "255.255.255.0")])
    assert c.discovery.interfaces == []  # both global under miredo's table: nothing to announce
