"""The simulated network itself: NAT mapping/filtering per type, timeouts, loss, timers, IPv6."""

from __future__ import annotations

import pytest

from tests.sim.simnet import NAT_KINDS, SimError, SimNet, UdpProbe, echo_reply_for

PUB_A = "203.0.113.10"
PUB_B = "203.0.113.20"
NAT_IP = "198.51.100.7"
LAN_IP = "198.18.0.2"


def _behind(kind: str, **opts):
    net = SimNet(seed=1, trace=True)
    nat = net.add_nat(kind, NAT_IP, **opts)
    inside = UdpProbe()
    a = UdpProbe()
    att_in = net.attach(inside, net.add_host(LAN_IP, realm=nat))
    net.attach(a, net.add_host(PUB_A, PUB_B), {0: (PUB_A, 3544), 1: (PUB_A, 3545),
                                                        2: (PUB_B, 3544)})
    return net, nat, inside, a, att_in


def test_outbound_source_is_translated_and_reply_comes_back():
    net, _, inside, a, att_in = _behind("port_restricted")
    inside.send(b"hello", (PUB_A, 3544))
    net.run_for(1)
    assert len(a.received) == 1
    data, src, sock, _ = a.received[0]
    assert (data, sock) == (b"hello", 0)
    assert src[0] == NAT_IP and src == att_in.public_address()
    a.send(b"back", src, sock=0)
    net.run_for(1)
    assert [(d, s) for d, s, _, _ in inside.received] == [(b"back", (PUB_A, 3544))]


@pytest.mark.parametrize(
    "kind, same_ip_other_port, other_ip",
    [
        ("full_cone", True, True),
        ("restricted", True, False),
        ("port_restricted", False, False),
        ("symmetric", False, False),
    ],
)
def test_inbound_filtering_by_nat_kind(kind, same_ip_other_port, other_ip):
    net, _, inside, a, _ = _behind(kind)
    inside.send(b"open", (PUB_A, 3544))
    net.run_for(1)
    mapped = a.received[0][1]
    a.send(b"p2", mapped, sock=1)  # same IP, other port
    a.send(b"ip2", mapped, sock=2)  # other IP
    net.run_for(1)
    got = set(inside.payloads())
    assert ("p2" in {g.decode() for g in got}) is same_ip_other_port
    assert ("ip2" in {g.decode() for g in got}) is other_ip


def test_symmetric_nat_maps_each_destination_to_its_own_port():
    net, _, inside, a, _ = _behind("symmetric")
    inside.send(b"1", (PUB_A, 3544))
    inside.send(b"2", (PUB_A, 3545))
    net.run_for(1)
    ports = {src for _, src, _, _ in a.received}
    assert len(ports) == 2

    net2, _, inside2, a2, _ = _behind("port_restricted")
    inside2.send(b"1", (PUB_A, 3544))
    inside2.send(b"2", (PUB_A, 3545))
    net2.run_for(1)
    assert len({src for _, src, _, _ in a2.received}) == 1


def test_mapping_times_out_and_reset_gives_new_port():
    net, nat, inside, a, _ = _behind("full_cone", timeout=30)
    inside.send(b"x", (PUB_A, 3544))
    net.run_for(1)
    first = a.received[-1][1]
    net.run_for(31)
    a.send(b"late", first)
    net.run_for(1)
    assert inside.payloads() == []
    assert net.stats["udp_nat_filtered"] == 1
    inside.send(b"y", (PUB_A, 3544))
    net.run_for(1)
    assert a.received[-1][1] != first
    second = a.received[-1][1]
    nat.reset()
    inside.send(b"z", (PUB_A, 3544))
    net.run_for(1)
    assert a.received[-1][1] not in (first, second)


def test_renumbered_nat_and_no_hairpin():
    net, nat, inside, a, att_in = _behind("full_cone")
    net.renumber_nat(nat, "198.51.100.8")
    inside.send(b"x", (PUB_A, 3544))
    net.run_for(1)
    assert a.received[-1][1][0] == "198.51.100.8"
    other = UdpProbe()
    net.attach(other, net.add_host("198.18.0.3", realm=nat))
    other.send(b"hairpin", att_in.public_address())
    net.run_for(1)
    assert inside.payloads() == [] and net.stats["udp_no_hairpin"] == 1


def test_loss_is_seeded_and_roughly_as_configured():
    def run(seed):
        net = SimNet(seed=seed, loss=0.3)
        a, b = UdpProbe(), UdpProbe()
        net.attach(a, net.add_host(PUB_A))
        att_b = net.attach(b, net.add_host(PUB_B))
        for i in range(1000):
            a.send(i.to_bytes(2, "big"), att_b.address())
        net.run_for(1)
        return b.payloads()

    r1, r2 = run(7), run(7)
    assert r1 == r2
    assert 600 < len(r1) < 800


def test_jitter_reorders_packets():
    net = SimNet(seed=3, jitter=0.05)
    a, b = UdpProbe(), UdpProbe()
    net.attach(a, net.add_host(PUB_A))
    att_b = net.attach(b, net.add_host(PUB_B))
    for i in range(50):
        a.send(bytes([i]), att_b.address())
    net.run_for(1)
    got = [p[0] for p in b.payloads()]
    assert sorted(got) == list(range(50)) and got != list(range(50))


def test_filters_drop_what_they_match():
    net = SimNet()
    a, b = UdpProbe(), UdpProbe()
    net.attach(a, net.add_host(PUB_A))
    att_b = net.attach(b, net.add_host(PUB_B))
    net.filters.append(lambda src, dst, data: data == b"drop")
    a.send(b"drop", att_b.address())
    a.send(b"keep", att_b.address())
    net.run_for(1)
    assert b.payloads() == [b"keep"]


def test_unbound_port_and_wiring_errors():
    net = SimNet()
    a = UdpProbe()
    host = net.add_host(PUB_A)
    net.attach(a, host, {0: 3544})
    a.send(b"x", (PUB_B, 1))
    net.run_for(1)
    assert net.stats["udp_no_route"] == 1
    with pytest.raises(SimError, match="already bound"):
        net.attach(UdpProbe(), host, {0: 3544})
    with pytest.raises(SimError, match="already used"):
        net.add_host(PUB_A)
    with pytest.raises(SimError, match="NAT kind"):
        net.add_nat("cone", "198.51.100.1")
    assert set(NAT_KINDS) == {"full_cone", "restricted", "port_restricted", "symmetric"}


class _Ticker:
    """A role with a periodic timer, to check the network's timer scheduling."""

    def __init__(self, start: float, period: float):
        self.udp_out: list = []
        self.events: list = []
        self.fired: list[float] = []
        self.period = period
        self.due = start + period

    def receive_datagram(self, data, src, sock, now):
        pass

    def next_timer(self):
        return self.due

    def handle_timer(self, now):
        if now >= self.due:
            self.fired.append(now)
            self.events.append(("tick", now))
            self.due += self.period


def test_timers_fire_on_the_fake_clock_and_events_are_collected():
    net = SimNet(start=0.0)
    t = _Ticker(0.0, 4.0)
    att = net.attach(t, net.add_host(PUB_A))
    net.run_for(17)
    assert t.fired == [4.0, 8.0, 12.0, 16.0]
    assert len(att.events) == 4 and t.events == []
    # a timer moved earlier by the test is honoured on the next run call
    t.due = net.now + 0.5
    net.run_for(1)
    assert t.fired[-1] == 17.5


def test_spinning_timer_is_reported():
    class Spin(_Ticker):
        def handle_timer(self, now):
            pass

    net = SimNet(start=0.0)
    net.attach(Spin(0.0, 1.0), net.add_host(PUB_A))
    with pytest.raises(SimError, match="next_timer"):
        net.run_for(2)


def _echo_request(src: bytes, dst: bytes) -> bytes:
    body = bytes([128, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"abcd"
    # checksum: the pseudo-header + body, computed here independently of engine.proto.wire
    pseudo = src + dst + len(body).to_bytes(4, "big") + b"\0\0\0\x3a"
    data = pseudo + body
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    csum = (~s & 0xFFFF).to_bytes(2, "big")
    body = body[:2] + csum + body[4:]
    return bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + b"\x3a\x40" + src + dst + body


def _csum_ok(pkt: bytes) -> bool:
    plen = int.from_bytes(pkt[4:6], "big")
    data = pkt[8:40] + plen.to_bytes(4, "big") + b"\0\0\0\x3a" + pkt[40 : 40 + plen]
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_native_ipv6_hosts_echo_and_prefix_routes():
    net = SimNet()
    h1 = bytes.fromhex("20010db8000000000000000000000001")
    teredo = bytes.fromhex("20010000c00002012c5a63bf39cc9bf8")
    native = net.ipv6.add_host(h1)

    class Relay:
        def __init__(self):
            self.udp_out, self.tun_out, self.got = [], [], []

        def receive_datagram(self, *a):
            pass

        def receive_tun_packet(self, pkt, now):
            self.got.append(pkt)

    relay = Relay()
    att = net.attach(relay, net.add_host(PUB_A), tun="native")
    net.ipv6.add_route(bytes.fromhex("20010000"), 32, att)
    req = _echo_request(teredo, h1)
    assert _csum_ok(req)
    net.ipv6.send(req)
    net.run_for(1)
    assert native.received[0][1] == req
    assert len(relay.got) == 1
    reply = relay.got[0]
    assert reply[24:40] == teredo and reply[8:24] == h1 and reply[40] == 129
    assert _csum_ok(reply) and reply == echo_reply_for(req)
    # the relay's tun_out goes to the native side
    relay.tun_out.append(req)
    net.run_for(1)
    assert len(native.received) == 2


def test_throughput_thousands_of_events_per_second():
    """Not a benchmark assertion on time: checks a large run completes with exact counts."""
    net = SimNet(seed=5)
    nat = net.add_nat("port_restricted", NAT_IP)
    inside, a = UdpProbe(replies=lambda d, s, k: [(k, d, s)]), UdpProbe()
    net.attach(inside, net.add_host(LAN_IP, realm=nat))
    net.attach(a, net.add_host(PUB_A))
    inside.send(b"open", (PUB_A, 40000))
    net.run_for(1)
    mapped = a.received[0][1]
    for i in range(20000):
        a.send(i.to_bytes(3, "big"), mapped)
    net.run_for(1)
    assert len(inside.received) == 20000
    assert len(a.received) == 20001
