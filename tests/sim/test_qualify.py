"""Qualifier driven directly with a fake clock: every state, timer and RA acceptance rule."""

from __future__ import annotations

import json
import random

import pytest

from engine.proto.addr import LL_CLIENT, build_teredo, ipv4_pack, server_link_local
from engine.proto.events import (
    InterfaceDown,
    InterfaceUp,
    MappingChanged,
    ServerLost,
    StateChanged,
)
from engine.proto.qualify import Qualifier
from engine.proto.wire import (
    Auth,
    Origin,
    build_datagram,
    build_icmpv6,
    parse_datagram,
    router_advertisement,
)

S1 = "203.0.113.10"
S2 = "203.0.113.20"
MAP = ("198.51.100.7", 40000)
PREFIX = 0x20010000


class Rng:
    """Deterministic stand-ins for secrets.token_bytes / secrets.randbits."""

    def __init__(self, seed: int = 1) -> None:
        self.r = random.Random(seed)
        self.flags_draws = 0

    def token_bytes(self, n: int) -> bytes:
        return self.r.randbytes(n)

    def randbits(self, k: int) -> int:
        if k == 16:
            self.flags_draws += 1
        return self.r.getrandbits(k)


def make(server2: str | None = None, seed: int = 1, now: float = 0.0) -> tuple[Qualifier, Rng]:
    rng = Rng(seed)
    q = Qualifier(S1, server2, now=now, token_bytes=rng.token_bytes, randbits=rng.randbits)
    return q, rng


def ra_from(q: Qualifier, *, mapping=MAP, server=None, mtu=1280, nonce=None) -> bytes:
    server = server or q.server
    return router_advertisement(
        q.outstanding_nonce if nonce is None else nonce,
        Origin(*mapping), PREFIX, server, mtu, LL_CLIENT,
    )


ORIGIN = Origin(*MAP)


def custom_ra(nonce: bytes, options: bytes, *, origin=ORIGIN, conf=0, server=S1) -> bytes:
    body = bytes(8) + (2000).to_bytes(4, "big") + options
    ipv6 = build_icmpv6(server_link_local(server), LL_CLIENT, 134, 0, body, 255)
    return build_datagram(ipv6, Auth(nonce=nonce, confirmation=conf), origin)


def pio(prefix8: bytes, plen: int = 64, length: int = 4) -> bytes:
    return bytes((3, length, plen, 0x40)) + b"\xff" * 8 + bytes(4) + prefix8 + bytes(8) + bytes(
        8 * (length - 4)
    )


def mtu_opt(value: int) -> bytes:
    return bytes((5, 1, 0, 0)) + value.to_bytes(4, "big")


GOOD_PIO = pio(bytes.fromhex("20010000") + ipv4_pack(S1))


def rs_sent(q: Qualifier) -> list[tuple[int, bytes, tuple[str, int]]]:
    out = list(q.udp_out)
    q.udp_out.clear()
    return out


def deliver(q: Qualifier, data: bytes, src=(S1, 3544), now=0.5) -> None:
    q.receive_datagram(data, src, 0, now)


def states(q: Qualifier) -> list[str]:
    return [e.state for e in q.events if isinstance(e, StateChanged)]


def run_timers(q: Qualifier, until: float) -> list[float]:
    """Fire q's timers up to `until`; returns the times at which RSes were sent."""
    sent = []
    while (t := q.next_timer()) is not None and t <= until:
        before = q.rs_sent
        q.handle_timer(t)
        if q.rs_sent > before:
            sent.append(t)
    return sent


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["10.0.0.1", "192.168.1.1", "127.0.0.1", "224.0.0.1", "0.0.0.0"])
def test_non_global_server_is_refused(bad):
    with pytest.raises(ValueError, match="not a global unicast IPv4"):
        Qualifier(bad, now=0, token_bytes=bytes, randbits=lambda k: 0)
    with pytest.raises(ValueError, match="ServerAddress2"):
        Qualifier(S1, bad, now=0, token_bytes=bytes, randbits=lambda k: 0)


def test_host_names_must_be_resolved_by_the_runtime():
    with pytest.raises(ValueError, match="resolve host names"):
        Qualifier("teredo.example.net", now=0, token_bytes=bytes, randbits=lambda k: 0)


def test_starting_state_and_first_rs_at_once():
    q, _ = make(now=5.0)
    assert q.state == "starting" and q.next_timer() == 5.0
    q.handle_timer(5.0)
    ((sock, data, dst),) = rs_sent(q)
    assert (sock, dst) == (0, (S1, 3544))
    t = parse_datagram(data)
    assert t.auth.nonce == q.outstanding_nonce and len(data) == 61
    assert t.ipv6[8:24] == LL_CLIENT
    assert q.state == "qualifying" and q.next_timer() == 9.0


# -- success -------------------------------------------------------------------------------


def test_valid_ra_brings_the_interface_up():
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q, mtu=1400), now=0.2)
    ups = [e for e in q.events if isinstance(e, InterfaceUp)]
    assert len(ups) == 1
    assert ups[0].address == build_teredo(PREFIX, S1, q.flags, MAP[1], MAP[0])
    assert ups[0].mtu == 1400 and q.mtu == 1400
    assert q.flags & ~0x3CFF == 0
    assert q.state == "qualified" and q.mapping == MAP and q.last_qualified == 0.2
    assert q.outstanding_nonce is None
    assert MappingChanged(None, MAP) in q.events
    assert states(q) == ["qualifying", "qualified"]


def test_ra_without_mtu_option_gives_1280():
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, custom_ra(q.outstanding_nonce, GOOD_PIO))
    assert q.up and q.mtu == 1280


def test_old_prefix_is_rewritten():
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, custom_ra(q.outstanding_nonce, pio(bytes.fromhex("3ffe831f") + ipv4_pack(S1))))
    assert q.address[:4] == bytes.fromhex("20010000")


def test_the_same_ra_is_not_accepted_twice():
    q, _ = make()
    q.handle_timer(0.0)
    ra = ra_from(q)
    deliver(q, ra)
    deliver(q, ra)
    assert q.counters.drops == {"ra_unexpected": 1}


# -- rejection -------------------------------------------------------------------------------


def _rejects(build, reason: str, src=(S1, 3544)) -> Qualifier:
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, build(q), src=src)
    assert not q.up and q.address is None
    assert q.counters.drops == {reason: 1}
    assert q.outstanding_nonce is not None  # still waiting for the right one
    return q


def test_nonce_mismatch_rejected():
    _rejects(lambda q: ra_from(q, nonce=b"\0" * 8), "ra_nonce_mismatch")


def test_ra_from_another_address_rejected():
    _rejects(lambda q: ra_from(q), "ra_wrong_server", src=("203.0.113.99", 3544))


def test_confirmation_nonzero_rejected():
    _rejects(lambda q: custom_ra(q.outstanding_nonce, GOOD_PIO, conf=1), "ra_auth_failed")


def test_missing_origin_rejected():
    _rejects(lambda q: custom_ra(q.outstanding_nonce, GOOD_PIO, origin=None), "ra_no_origin")


def test_pio_naming_another_server_rejected():
    other = pio(bytes.fromhex("20010000") + ipv4_pack("203.0.113.99"))
    _rejects(lambda q: custom_ra(q.outstanding_nonce, other), "ra_pio_server_mismatch")


@pytest.mark.parametrize(
    "options",
    [
        pio(bytes.fromhex("20010000") + ipv4_pack(S1), plen=48),  # not a /64
        GOOD_PIO + GOOD_PIO,  # two PIOs
        mtu_opt(1280) * 4,  # 32 bytes of options, but no PIO
        pio(bytes.fromhex("ff010000") + ipv4_pack(S1)),  # multicast prefix
        bytes((3, 0)) + GOOD_PIO[2:],  # an option whose length field says 0
        GOOD_PIO[:24],  # fewer than 32 bytes of options
    ],
)
def test_bad_pio_rejected(options):
    _rejects(lambda q: custom_ra(q.outstanding_nonce, options), "ra_invalid")


@pytest.mark.parametrize("mtu", [0, 1279, 65536, 0xFFFFFFFF])
def test_bad_mtu_rejected(mtu):
    _rejects(lambda q: custom_ra(q.outstanding_nonce, GOOD_PIO + mtu_opt(mtu)), "ra_bad_mtu")


def test_non_candidates_are_ignored():
    q, _ = make()
    q.handle_timer(0.0)
    ra = ra_from(q)
    deliver(q, ra, src=(S1, 3545))  # not from port 3544
    deliver(q, ra[13:])  # no auth header
    deliver(q, b"\x00")
    assert not q.up
    assert q.counters.drops == {"not_qualification": 2, "malformed": 1}


# -- timers: retransmission, loss, back-off --------------------------------------------------


def test_rs_every_4s_three_times_then_100s_backoff():
    q, _ = make()
    assert run_timers(q, 50.0) == [0.0, 4.0, 8.0]
    nonces = {parse_datagram(d).auth.nonce for _, d, _ in rs_sent(q)}
    assert len(nonces) == 3  # a fresh nonce per RS
    assert q.state == "backoff" and q.next_timer() == 108.0
    assert not any(isinstance(e, InterfaceDown) for e in q.events)  # never was up
    assert run_timers(q, 119.0) == [108.0, 112.0, 116.0]
    assert states(q) == ["qualifying", "backoff", "qualifying"]


def test_late_ra_for_a_replaced_nonce_is_rejected():
    q, _ = make()
    q.handle_timer(0.0)
    first = ra_from(q)
    q.handle_timer(4.0)  # timeout -> second RS with a new nonce
    deliver(q, first, now=4.1)
    assert not q.up and q.counters.drops == {"ra_nonce_mismatch": 1}


def test_three_refresh_failures_bring_the_tunnel_down():
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    refresh = q.next_timer()
    assert 22.5 <= refresh <= 30.0
    sent = run_timers(q, refresh + 11.0)
    assert sent == [refresh, refresh + 4, refresh + 8]
    assert q.state == "qualified" and q.up  # still up while retrying
    run_timers(q, refresh + 12.0)
    assert not q.up and q.address is None and q.state == "backoff"
    downs = [e for e in q.events if isinstance(e, (InterfaceDown, ServerLost))]
    assert downs == [InterfaceDown(), ServerLost()]
    assert q.next_timer() == refresh + 8 + 100
    assert states(q) == ["qualifying", "qualified", "lost", "backoff"]
    assert "no reply" in q.status()["last_error"]


def test_requalification_after_loss_keeps_flags_when_nothing_changed():
    q, rng = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    addr, draws = q.address, rng.flags_draws
    run_timers(q, 200.0)
    assert not q.up
    run_timers(q, q.next_timer())
    deliver(q, ra_from(q), now=q.next_timer() - 3.9)
    assert q.up and q.address == addr and rng.flags_draws == draws
    assert [e for e in q.events if isinstance(e, InterfaceUp)][-1].address == addr
    assert states(q)[-3:] == ["backoff", "lost", "qualified"]


def test_refresh_with_same_mapping_emits_nothing_new():
    q, rng = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    n_events, draws = len(q.events), rng.flags_draws
    for _ in range(20):
        t = q.next_timer()
        q.handle_timer(t)
        deliver(q, ra_from(q), now=t + 0.1)
    assert len(q.events) == n_events and rng.flags_draws == draws


def test_refresh_jitter_is_uniform_between_75_and_100_percent():
    q, _ = make(seed=42)
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.0)
    last = 0.0
    gaps = []
    for _ in range(400):
        t = q.next_timer()
        gaps.append(t - last)
        last = t
        q.handle_timer(t)
        deliver(q, ra_from(q), now=t + 0.05)
    assert min(gaps) >= 22.5 and max(gaps) <= 30.0
    assert min(gaps) < 23.5 and max(gaps) > 29.0  # the whole range is used
    assert 25.5 < sum(gaps) / len(gaps) < 27.0  # mean of U(22.5, 30) is 26.25


def test_mapping_change_gives_new_address_and_new_flags():
    q, rng = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    old_addr, old_flags = q.address, q.flags
    t = q.next_timer()
    q.handle_timer(t)
    new_map = ("198.51.100.7", 40001)
    deliver(q, ra_from(q, mapping=new_map), now=t + 0.1)
    assert q.mapping == new_map and q.address != old_addr
    assert rng.flags_draws == 2 and q.flags != old_flags  # seed 1 draws differ
    assert q.address == build_teredo(PREFIX, S1, q.flags, 40001, "198.51.100.7")
    assert q.events[-2:] == [MappingChanged(MAP, new_map), InterfaceUp(q.address, 1280)]
    assert not any(isinstance(e, InterfaceDown) for e in q.events)  # no DOWN in between


def test_mtu_change_alone_is_a_new_up_with_same_address():
    q, rng = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    addr = q.address
    t = q.next_timer()
    q.handle_timer(t)
    deliver(q, ra_from(q, mtu=1500), now=t + 0.1)
    assert q.events[-1] == InterfaceUp(addr, 1500) and rng.flags_draws == 1


# -- fallback to ServerAddress2 -------------------------------------------------------------


def test_fallback_to_server2_after_a_failed_streak():
    q, _ = make(server2=S2)
    assert run_timers(q, 11.0) == [0.0, 4.0, 8.0]
    assert [d for _, _, d in rs_sent(q)] == [(S1, 3544)] * 3
    run_timers(q, 12.0)  # third timeout: straight to the second server
    ((_, _, dst),) = rs_sent(q)
    assert dst == (S2, 3544) and q.server == S2 and q.state == "qualifying"
    deliver(q, ra_from(q, server=S2), src=(S2, 3544), now=12.1)
    assert q.up and q.address[4:8] == ipv4_pack(S2)


def test_both_servers_silent_then_backoff_and_alternate():
    q, _ = make(server2=S2)
    sent = run_timers(q, 130.0)
    assert sent == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 120.0, 124.0, 128.0]
    dsts = [d[0] for _, _, d in rs_sent(q)]
    assert dsts == [S1] * 3 + [S2] * 3 + [S1] * 3


def test_server2_down_later_switches_back_with_a_new_address():
    q, rng = make(server2=S2)
    run_timers(q, 12.0)
    deliver(q, ra_from(q, server=S2), src=(S2, 3544), now=12.1)
    addr2 = q.address
    run_timers(q, 12.0 + 30.0 + 12.0)  # three refreshes to S2 go unanswered
    assert not q.up and q.server == S1 and q.state == "lost"
    assert q.outstanding_nonce is not None  # already asking S1, no back-off
    deliver(q, ra_from(q, server=S1), now=q.next_timer() - 3.9)
    assert q.up and q.address[4:8] == ipv4_pack(S1) and q.address != addr2
    assert rng.flags_draws == 2


def test_ra_from_server2_while_asking_server1_is_rejected():
    q, _ = make(server2=S2)
    q.handle_timer(0.0)
    deliver(q, ra_from(q, server=S2), src=(S2, 3544))
    assert not q.up and q.counters.drops == {"ra_wrong_server": 1}


# -- kick ----------------------------------------------------------------------------------------


def test_kick_leaves_backoff_at_once():
    q, _ = make()
    run_timers(q, 13.0)
    assert q.state == "backoff"
    rs_sent(q)
    q.kick(20.0)
    assert len(rs_sent(q)) == 1 and q.state == "qualifying" and q.next_timer() == 24.0


def test_kick_while_qualified_uses_a_fresh_nonce_and_keeps_the_interface():
    q, _ = make()
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    rs_sent(q)
    q.kick(5.0)
    (_, data, _), = rs_sent(q)
    assert q.up and q.state == "qualified"
    assert parse_datagram(data).auth.nonce == q.outstanding_nonce
    n_up = len([e for e in q.events if isinstance(e, InterfaceUp)])
    deliver(q, ra_from(q, mapping=("198.51.100.9", 1234)), now=5.1)
    assert len([e for e in q.events if isinstance(e, InterfaceUp)]) == n_up + 1


def test_kick_while_down_returns_to_the_primary():
    q, _ = make(server2=S2)
    run_timers(q, 12.0)
    assert q.server == S2
    q.kick(13.0)
    assert q.server == S1 and rs_sent(q)[-1][2] == (S1, 3544)


def test_set_servers_requalifies_only_on_change():
    q, _ = make()
    q.handle_timer(0.0)
    rs_sent(q)
    q.set_servers(S1, None, 1.0)
    assert rs_sent(q) == []
    q.set_servers("203.0.113.30", None, 1.0)
    assert rs_sent(q)[0][2] == ("203.0.113.30", 3544)
    with pytest.raises(ValueError, match="not a global"):
        q.set_servers("10.0.0.1", None, 2.0)


# -- composition and status ----------------------------------------------------------------------


def test_shared_output_lists_and_candidate_filter():
    udp_out, events = [], []
    rng = Rng()
    q = Qualifier(S1, now=0.0, token_bytes=rng.token_bytes, randbits=rng.randbits,
                  udp_out=udp_out, events=events, sock=0)
    q.handle_timer(0.0)
    assert len(udp_out) == 1 and events == [StateChanged("qualifying", f"soliciting {S1}")]
    assert q.counters.udp_out_packets == 0 and q.rs_sent == 1  # the composing role counts
    t = parse_datagram(ra_from(q))
    assert Qualifier.is_candidate(t, (S1, 3544))
    assert not Qualifier.is_candidate(t, (S1, 3545))
    assert q.handle_ra(t, (S1, 3544), 0.5) is True
    assert any(isinstance(e, InterfaceUp) for e in events)


def test_status_is_json():
    q, _ = make(server2=S2)
    q.handle_timer(0.0)
    deliver(q, ra_from(q), now=0.1)
    st = json.loads(json.dumps(q.status()))
    assert st["state"] == "qualified" and st["server"] == S1 and st["server2"] == S2
    assert st["server_in_use"] == S1
    assert st["mapped"] == {"ip": MAP[0], "port": MAP[1]} and st["mtu"] == 1280
    assert st["address"].startswith("2001:0:cb00:710a:") and st["last_qualified"] == 0.1
