"""A relay restarted mid-flow (issue 9 flaw 9), on the simulated network with the real roles.

The new relay has an empty peer table and a new bubble key.  A client keeps sending to the
relay its peer entry names (trusted, valid 30 s after the last packet it got back), so under
miredo's rule (a relay drops every Teredo source it never sent to) its flow to a native host
stops until that entry expires.  The relay now verifies such a source with the bubble
exchange of T8 instead (engine/proto/relay.py): traffic resumes within a round trip through
the server.  What a spoofer can do with the same rule is pinned here too: nothing it sends
is forwarded unless the address's real owner answers the bubble.

All times are simulated seconds (the fake clock), never wall-clock.
"""

from __future__ import annotations

import pytest

from engine.proto.addr import build_teredo
from engine.proto.client import ClientRole
from engine.proto.relay import VERIFY_RATE, RelayRole
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.tunnel import TeredoTunnel
from engine.proto.wire import bubble, echo_request
from tests.sim.simnet import Attachment, SimNet

SRV1, SRV2 = "203.0.113.10", "203.0.113.11"
RELAY_IP = "203.0.113.20"
RELAY_PORT = 3545
NATIVE = bytes.fromhex("20010db8000100000000000000000001")
PEER_EXPIRY = 30  # the client's entry for the native host: valid 30 s after its last packet
INTERVAL = 0.5  # one echo request every half second, like `ping -i 0.5`


def _key(seed: int):
    return lambda n: bytes((seed * 37 + k) & 0xFF for k in range(n))


class Lab:
    """Server, relay, a native host and one client behind a port-restricted NAT."""

    def __init__(self, nat: str = "port_restricted") -> None:
        self.net = net = SimNet(seed=9, trace=False)
        self.server = ServerRole(SRV1, SRV2, limits=ServerLimits.unlimited(), now=net.now)
        net.attach(self.server, net.add_host(SRV1, SRV2), {0: (SRV1, 3544), 1: (SRV2, 3544)})
        self.relay_host = net.add_host(RELAY_IP)
        self.relay, self.ratt = self._start_relay(1)
        self.host = net.ipv6.add_host(NATIVE)
        self.client = ClientRole(server=SRV1, token_bytes=_key(50), randbits=lambda k: 0x2345,
                                 ping_ident=0x77, now=net.now)
        self.catt = net.attach(self.client, net.add_host("198.18.0.2",
                                                         realm=net.add_nat(nat, "198.51.100.1")))
        assert net.run_until_true(lambda: self.client.up, 10)

    def _start_relay(self, seed: int) -> tuple[RelayRole, Attachment]:
        relay = RelayRole(token_bytes=_key(seed), now=self.net.now)
        att = self.net.attach(relay, self.relay_host, {0: RELAY_PORT}, tun="native")
        self.net.ipv6.routes = [r for r in self.net.ipv6.routes if r[2].role is not
                                getattr(self, "relay", None)]
        self.net.ipv6.add_route(bytes.fromhex("20010000"), 32, att)
        return relay, att

    def restart_relay(self) -> None:
        """kill -9 and start again: same address and port, nothing remembered, a new key."""
        self.net.detach(self.ratt)
        self.relay, self.ratt = self._start_relay(2)

    def client_pings(self, start: float, end: float, ident: int = 0x4D) -> None:
        """The client pings the native host every INTERVAL from `start` to `end`."""
        seq = 0
        t = start
        while t < end:
            req = echo_request(self.client.address, NATIVE, ident, seq, b"ping")
            self.net.call_at(t, lambda now, r=req: self.net.tun_send(self.catt, r))
            seq += 1
            t += INTERVAL

    def native_pings(self, start: float, end: float, ident: int = 0x4E) -> None:
        """The native host pings the client every INTERVAL from `start` to `end`."""
        seq = 0
        t = start
        while t < end:
            req = echo_request(NATIVE, self.client.address, ident, seq, b"ping")
            self.net.call_at(t, lambda now, r=req: self.net.ipv6.send(r))
            seq += 1
            t += INTERVAL

    def replies_at_client(self, ident: int) -> list[float]:
        """When the client's TUN got echo replies of `ident`."""
        return [t for t, p in self.catt.tun_log
                if p[6] == 58 and p[40] == 129 and p[44:46] == ident.to_bytes(2, "big")]

    def requests_at_client(self, ident: int) -> list[float]:
        """When the client's TUN got the native host's echo requests of `ident` (the sim has
        no kernel behind the client's TUN to answer them)."""
        return [t for t, p in self.catt.tun_log
                if p[6] == 58 and p[40] == 128 and p[44:46] == ident.to_bytes(2, "big")]


def _outage(replies: list[float], restart: float) -> float:
    """Seconds from the restart to the first reply after it (inf: none)."""
    after = [t for t in replies if t > restart]
    return after[0] - restart if after else float("inf")


def _client_flow_outage(lab: Lab, horizon: float) -> float:
    t0 = lab.net.now
    lab.client_pings(t0, t0 + 10 + horizon)
    lab.net.run_for(10)
    assert lab.replies_at_client(0x4D), "the flow never started"
    restart = lab.net.now
    lab.restart_relay()
    lab.net.run_for(horizon)
    return _outage(lab.replies_at_client(0x4D), restart)


def test_client_to_native_flow_resumes_within_a_round_trip_after_a_relay_restart():
    lab = Lab()
    outage = _client_flow_outage(lab, horizon=10)
    print(f"client->native flow, relay restarted: resumes after {outage:.2f} s (simulated)")
    assert outage < 2 * INTERVAL + 1, outage  # the next request, plus one trip to the server
    st = lab.relay.status()
    assert st["verify"] == {"attempts": 1, "proven": 1, "rate_limited": 0}
    assert lab.relay.peers.get(lab.client.address).trusted
    # every request sent after the restart got its answer: the ones that waited were queued
    sent_after = 10 / INTERVAL
    assert len([t for t in lab.replies_at_client(0x4D) if t > 10 + 2]) >= sent_after - 2


def test_with_miredos_rule_the_same_flow_waits_for_the_clients_peer_expiry(monkeypatch):
    """The scenario above really is flaw 9: without the verification it stalls ~30 s."""
    monkeypatch.setattr(RelayRole, "_rx_verify", TeredoTunnel._rx_verify)
    lab = Lab()
    outage = _client_flow_outage(lab, horizon=45)
    print(f"client->native flow, relay restarted, miredo's rule: {outage:.2f} s (simulated)")
    assert PEER_EXPIRY - 5 < outage < float("inf"), outage


def test_native_to_client_flow_resumes_after_a_relay_restart():
    lab = Lab()
    t0 = lab.net.now
    lab.native_pings(t0, t0 + 20)
    lab.net.run_for(10)
    assert lab.requests_at_client(0x4E)
    restart = lab.net.now
    lab.restart_relay()
    lab.net.run_for(10)
    assert _outage(lab.requests_at_client(0x4E), restart) < 2 * INTERVAL + 1


def test_both_directions_at_once_resume_after_a_relay_restart():
    lab = Lab()
    t0 = lab.net.now
    lab.client_pings(t0, t0 + 20)
    lab.native_pings(t0 + 0.25, t0 + 20)
    lab.net.run_for(10)
    restart = lab.net.now
    lab.restart_relay()
    lab.net.run_for(10)
    assert _outage(lab.replies_at_client(0x4D), restart) < 2 * INTERVAL + 1
    assert _outage(lab.requests_at_client(0x4E), restart) < 2 * INTERVAL + 1


def _ghost(port: int = 40000, ip: str = "198.51.100.99") -> bytes:
    """A Teredo address under our server whose mapped client does not exist."""
    return build_teredo(0x20010000, SRV1, 0, port, ip)


def test_a_spoofer_gets_nothing_forwarded_and_at_most_four_bubbles():
    lab = Lab()
    net, relay = lab.net, lab.relay
    ghost = _ghost()
    for i in range(120):  # a minute of spoofed packets from the mapping in the address
        net.call_at(net.now + i * 0.5, lambda now, i=i: net.inject(
            echo_request(ghost, NATIVE, 1, i, b"spoofed"), ("198.51.100.99", 40000),
            (RELAY_IP, RELAY_PORT)))
    bubbles_before = relay.counters.udp_out_packets
    net.run_for(61)
    assert not any(b"spoofed" in p for _, p in lab.host.received)
    p = relay.peers.get(ghost)
    assert p is None or not p.trusted
    assert relay.verify_attempts >= 1 and relay.verify_proven == 0
    # the bubbles went to the server named in the address: 4, miredo's limiter (then 300 s)
    assert relay.counters.udp_out_packets - bubbles_before <= 4 * relay.verify_attempts
    assert relay.verify_attempts <= 2  # one entry, made again at most once after expiry


def test_a_forged_answer_does_not_prove_a_spoofed_source():
    lab = Lab()
    net, relay = lab.net, lab.relay
    ghost, src = _ghost(), ("198.51.100.99", 40000)
    net.inject(echo_request(ghost, NATIVE, 1, 1, b"spoofed"), src, (RELAY_IP, RELAY_PORT))
    net.run_for(0.5)
    # a bubble from the same mapping, but to a token the spoofer had to guess
    for guess in (bytes.fromhex("fe80000000000000") + bytes(8), NATIVE, relay.token_source(NATIVE)):
        net.inject(bubble(ghost, guess), src, (RELAY_IP, RELAY_PORT))
    # and a second data packet from the matching mapping (R9a alone trusts a T8 entry)
    net.inject(echo_request(ghost, NATIVE, 1, 2, b"spoofed"), src, (RELAY_IP, RELAY_PORT))
    net.run_for(5)
    assert not relay.peers.get(ghost).trusted
    assert not any(b"spoofed" in p for _, p in lab.host.received)
    assert relay.verify_proven == 0


def test_a_source_whose_mapping_does_not_match_is_still_dropped_without_an_entry():
    lab = Lab()
    net, relay = lab.net, lab.relay
    net.inject(echo_request(_ghost(), NATIVE, 1, 1, b"spoofed"), ("198.51.100.98", 1),
               (RELAY_IP, RELAY_PORT))
    net.run_for(1)
    assert relay.counters.drops["rx_mapping_mismatch"] == 1
    assert len(relay.peers) == 0 and relay.verify_attempts == 0


def test_unknown_bubbles_are_dropped_as_before():
    lab = Lab()
    net, relay = lab.net, lab.relay
    ghost = _ghost()
    net.inject(bubble(ghost, NATIVE), ("198.51.100.99", 40000), (RELAY_IP, RELAY_PORT))
    net.run_for(1)
    assert relay.counters.drops["rx_unknown_peer"] == 1 and len(relay.peers) == 0


@pytest.mark.parametrize("n", [30_000])
def test_a_spoofed_flood_is_bounded_by_the_verify_limit_and_the_byte_budget(n):
    lab = Lab()
    net, relay = lab.net, lab.relay
    relay.peers.memory_limit = 1 << 20  # a small budget, so the flood must evict itself
    out_before = relay.counters.udp_out_packets
    for i in range(n):  # all within one simulated second
        port = 1024 + i % 60000
        ip = f"198.51.{100 + i // 60000}.{99}"
        net.inject(echo_request(_ghost(port, ip), NATIVE, 1, i, b"flood"), (ip, port),
                   (RELAY_IP, RELAY_PORT))
    net.run_for(1)
    bubbles = relay.counters.udp_out_packets - out_before
    assert bubbles <= VERIFY_RATE.burst + VERIFY_RATE.rate * 2
    assert relay.verify_limit.denied >= n - bubbles
    assert relay.counters.drops["verify_rate_limited"] == relay.verify_limit.denied
    assert relay.peers.used <= relay.peers.memory_limit
    assert not any(b"flood" in p for _, p in lab.host.received)
    # the real client still gets through the flood's relay
    t0 = net.now
    lab.client_pings(t0, t0 + 5)
    net.run_for(6)
    assert lab.replies_at_client(0x4D)
