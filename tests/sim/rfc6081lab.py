"""Two Teredo clients and a server on the simulated network, behind the NAT kinds RFC 6081
targets; shared by the RFC 6081 sim tests.

Why a module of its own: the baseline tests (plain RFC 4380 fails here) and the extension
tests (it passes) must run the very same topology and traffic, so that "behaviour equals
today's with the extensions off" compares like with like.
"""

from __future__ import annotations

from typing import Any

from engine.proto.client import ClientRole
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.wire import build_ipv6
from tests.sim.simnet import Attachment, SimNet

SRV1, SRV2 = "203.0.113.10", "203.0.113.11"


def tokens(seed: int):
    state = [seed]

    def token_bytes(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] * 31 + k) & 0xFF for k in range(n))

    return token_bytes


def bits(seed: int):
    state = [seed * 7919]

    def randbits(k: int) -> int:
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] & ((1 << k) - 1)

    return randbits


class PairLab:
    """Server + clients A and B.  `nat_a`/`nat_b` are `SimNet.add_nat_kind` names; with
    `shared=True` both clients sit behind one NAT of kind `nat_a` (on two different inside
    subnets, so local discovery's same-subnet rule cannot pair them)."""

    def __init__(self, nat_a: str, nat_b: str = "port_restricted", *, shared: bool = False,
                 hairpin: bool = False, seed: int = 3, client_kw: Any = None,
                 client_kw_b: Any = None) -> None:
        self.net = net = SimNet(seed=seed, trace=True)
        self.server = ServerRole(SRV1, SRV2, limits=ServerLimits.unlimited(), now=net.now)
        net.attach(self.server, net.add_host(SRV1, SRV2), {0: (SRV1, 3544), 1: (SRV2, 3544)})
        kw_a = dict(client_kw or {})
        kw_b = dict(client_kw_b if client_kw_b is not None else kw_a)
        if shared:
            nat = net.add_nat_kind(nat_a, "198.51.100.1", hairpin=hairpin)
            nats = [nat, nat]
        else:
            nats = [net.add_nat_kind(nat_a, "198.51.100.1", hairpin=hairpin),
                    net.add_nat_kind(nat_b, "198.51.100.2", hairpin=hairpin)]
        self.nats = nats
        self.clients: list[ClientRole] = []
        self.atts: list[Attachment] = []
        for i, nat in enumerate(nats):
            c = ClientRole(server=SRV1, token_bytes=tokens(10 + i), randbits=bits(i + 1),
                           ping_ident=0x100 + i, now=net.now, **(kw_a if i == 0 else kw_b))
            host = net.add_host(f"10.{i + 1}.0.2", realm=nat)
            att = net.attach(c, host, {0: 40000 + 1111 * (i + 1)})
            # host facts the runtime gives a client: its socket, and that it opens the
            # extra sockets of `socket_requests` (simnet does)
            c.set_local_endpoint(*att.address(0), extra_sockets=True)
            self.clients.append(c)
            self.atts.append(att)
        assert net.run_until_true(lambda: all(c.up for c in self.clients), 30)
        net.run_for(5)  # let any post-qualification probe finish

    @property
    def a(self) -> ClientRole:
        return self.clients[0]

    @property
    def b(self) -> ClientRole:
        return self.clients[1]

    def received(self, i: int, marker: bytes) -> int:
        return sum(1 for _, p in self.atts[i].tun_log if p[6] == 17 and p[40:] == marker)

    def ping_pong(self, seconds: int = 8, initiator: int = 0) -> tuple[int, int]:
        """The initiator (A by default) sends to the other once a second (like ping), the
        other answers every packet it got; returns (packets B got from A, packets A got
        from B)."""
        net = self.net
        i, j = initiator, 1 - initiator
        src, dst = self.clients[i], self.clients[j]
        ask, answer = (b"a->b", b"b->a") if i == 0 else (b"b->a", b"a->b")
        got_j = self.received(j, ask)
        for _ in range(seconds):
            net.tun_send(self.atts[i], build_ipv6(src.address, dst.address, 17, ask))
            net.run_for(0.5)
            n = self.received(j, ask)
            for _ in range(n - got_j):
                net.tun_send(self.atts[j], build_ipv6(dst.address, src.address, 17, answer))
            got_j = n
            net.run_for(0.5)
        return self.received(1, b"a->b"), self.received(0, b"b->a")
