"""ServerRole driven directly: the RA bytes, every input check S1-S7 / action A1-A6, rate limits.

Packets are built with `engine.proto.wire` or spelled out as bytes from docs/protocol.md §3.4 so
that a mistake in the builders cannot hide one in the server.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.proto.addr import (
    ALL_ROUTERS,
    LL_CLIENT,
    LL_CONE,
    build_teredo,
    ipv6_pack,
    server_link_local,
)
from engine.proto.ratelimit import Rate
from engine.proto.server import ServerLimits, ServerRole
from engine.proto.wire import (
    Auth,
    Origin,
    bubble,
    build_datagram,
    build_icmpv6,
    build_ipv6,
    echo_request,
    parse_datagram,
    parse_router_advertisement,
    router_solicitation,
)


def hx(s: str) -> bytes:
    return bytes.fromhex(" ".join(line[6:] for line in s.strip().splitlines()))


E1 = hx("""
0000  00 01 00 00 a1 b2 c3 d4 e5 f6 07 18 00 60 00 00
0010  00 00 08 3a ff fe 80 00 00 00 00 00 00 00 00 ff
0020  ff ff ff ff ff ff 02 00 00 00 00 00 00 00 00 00
0030  00 00 00 00 02 85 00 7d 37 00 00 00 00
""")
E2 = hx("""
0000  00 01 00 00 a1 b2 c3 d4 e5 f6 07 18 00 00 00 63
0010  bf 39 cc 9b f8 60 00 00 00 00 38 3a ff fe 80 00
0020  00 00 00 00 00 80 00 f2 27 3f ff fd fe fe 80 00
0030  00 00 00 00 00 00 00 ff ff ff ff ff ff 86 00 95
0040  4c 00 00 00 00 00 00 00 00 00 00 07 d0 03 04 40
0050  40 ff ff ff ff ff ff ff ff 00 00 00 00 20 01 00
0060  00 c0 00 02 01 00 00 00 00 00 00 00 00 05 01 00
0070  00 00 00 05 00
""")
E4 = hx("""
0000  60 00 00 00 00 00 3b 00 fe 80 00 00 00 00 00 00
0010  48 b1 77 c2 9d 0e 5a 31 20 01 00 00 c0 00 02 01
0020  2c 5a 63 bf 39 cc 9b f8
""")
E5 = hx("""
0000  00 00 f2 26 34 ff 8e fa 60 00 00 00 00 00 3b 00
0010  fe 80 00 00 00 00 00 00 48 b1 77 c2 9d 0e 5a 31
0020  20 01 00 00 c0 00 02 01 2c 5a 63 bf 39 cc 9b f8
""")
E7 = hx("""
0000  60 00 00 00 00 1a 3a 80 20 01 00 00 c0 00 02 01
0010  2c 5a 63 bf 39 cc 9b f8 20 01 0d b8 00 00 00 00
0020  00 00 00 00 00 00 00 01 80 00 26 b6 12 34 b2 c3
0030  65 a1 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d
0040  1e 1f
""")

PRIMARY = "192.0.2.1"
SECONDARY = "192.0.2.2"
CLIENT_MAP = ("198.51.100.7", 40000)
CLIENT = build_teredo(0x20010000, PRIMARY, 0x2C5A, 40000, "198.51.100.7")
RELAY = ("203.0.113.5", 3545)
OTHER_PEER = build_teredo(0x20010000, PRIMARY, 0x0413, 50000, "203.0.113.9")
NATIVE = ipv6_pack("2001:db8::1")


def server(**kw) -> ServerRole:
    return ServerRole(PRIMARY, SECONDARY, now=0.0, **kw)


def feed(s: ServerRole, data: bytes, src=CLIENT_MAP, sock=0, now=1.0):
    s.receive_datagram(data, src, sock, now)
    out, raw = list(s.udp_out), list(s.raw6_out)
    s.udp_out.clear()
    s.raw6_out.clear()
    return out, raw


def dropped(s: ServerRole) -> dict[str, int]:
    return dict(s.counters.drops)


def test_example_bytes_are_as_documented():
    assert router_solicitation(bytes.fromhex("a1b2c3d4e5f60718")) == E1
    assert len(E1) == 61 and len(E2) == 117 and E4[24:40] == CLIENT


# -- router solicitations ------------------------------------------------------------------


def test_rs_e1_gets_exactly_e2():
    s = server()
    out, raw = feed(s, E1)
    assert out == [(0, E2, CLIENT_MAP)] and raw == []
    assert s.counters.udp_out_bytes == 117 and s.handled["ra_sent"] == 1


def test_ra_content_is_what_a_client_accepts():
    s = ServerRole(PRIMARY, SECONDARY, 0x20010000, 1400)
    ((sock, payload, dst),) = feed(s, router_solicitation(b"12345678"), src=CLIENT_MAP)[0]
    assert (sock, dst) == (0, CLIENT_MAP)
    t = parse_datagram(payload)
    ra = parse_router_advertisement(t)
    assert t.auth.nonce == b"12345678" and t.auth.confirmation == 0
    assert t.origin == Origin(*CLIENT_MAP)
    assert ra.prefix8 == bytes.fromhex("20010000c0000201") and ra.mtu == 1400
    assert t.ipv6[8:24] == server_link_local(PRIMARY) and t.ipv6[24:40] == LL_CLIENT
    assert t.ipv6[7] == 255


def test_rs_without_auth_gets_ra_without_auth():
    s = server()
    out, _ = feed(s, E1[13:])
    assert out == [(0, E2[13:], CLIENT_MAP)]
    assert parse_datagram(out[0][1]).auth is None


def test_ra_leaves_from_the_socket_the_rs_came_in_on_and_pio_names_the_primary():
    s = server()
    out, _ = feed(s, E1, sock=1)
    assert out[0][0] == 1
    assert out[0][1] == E2  # same bytes: PIO with the primary, source link-local of the primary


@pytest.mark.parametrize("in_sock, out_sock", [(0, 1), (1, 0)])
def test_cone_rs_is_answered_from_the_other_address(in_sock, out_sock):
    s = server()
    rs = router_solicitation(b"abcdefgh", src=LL_CONE)
    out, _ = feed(s, rs, sock=in_sock)
    assert [o[0] for o in out] == [out_sock]
    t = parse_datagram(out[0][1])
    assert t.ipv6[24:40] == LL_CONE  # RA goes back to the RS source, copied as received
    assert parse_router_advertisement(t).prefix8[4:8] == bytes([192, 0, 2, 1])


def test_rs_from_teredo_source_via_s5_and_to_our_link_local():
    s = server()
    rs_to_ll = build_datagram(
        build_icmpv6(CLIENT, server_link_local(PRIMARY), 133, 0, bytes(4), 255),
        Auth(nonce=b"n" * 8),
    )
    out, _ = feed(s, rs_to_ll)
    assert len(out) == 1 and parse_datagram(out[0][1]).ipv6[24:40] == CLIENT
    rs_all = build_datagram(build_icmpv6(CLIENT, ALL_ROUTERS, 133, 0, bytes(4), 255))
    out, _ = feed(s, rs_all)
    assert len(out) == 1
    # the same RS from a UDP source that does not match the embedded mapping: S5 drops it
    out, _ = feed(s, rs_all, src=("198.51.100.7", 40001))
    assert out == [] and dropped(s) == {"s5_mapping_mismatch": 1}


# -- input checks S1-S7 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x60",
        E1[:20],  # auth then a truncated IPv6 header
        E4[:39],
        b"\x50" + E4[1:],  # IPv6 version 5
        E4[:5] + b"\x08" + E4[6:],  # plen 8 with 0 bytes of payload
        Origin("203.0.113.5", 1).pack() + Auth(nonce=bytes(8)).pack() + E4,  # wrong order
    ],
)
def test_s1_malformed_datagrams_are_dropped(data):
    s = server()
    assert feed(s, data) == ([], [])
    assert dropped(s) == {"s1_malformed": 1}


def test_s2_only_bubbles_and_icmpv6():
    s = server()
    udp6 = build_ipv6(CLIENT, NATIVE, 17, bytes(8))
    assert feed(s, udp6) == ([], [])
    tcp6 = build_ipv6(LL_CLIENT, ALL_ROUTERS, 6, bytes(20))
    assert feed(s, tcp6) == ([], [])
    assert dropped(s) == {"s2_not_bubble_or_icmpv6": 2}


@pytest.mark.parametrize(
    "ip", ["10.1.2.3", "192.168.0.1", "172.16.5.5", "127.0.0.1", "0.0.0.0", "169.254.1.1",
           "224.0.0.253", "239.1.1.1", "255.255.255.255", "192.88.99.1"],
)
def test_s3_non_global_udp_sources_get_nothing(ip):
    """A spoofed private/multicast/broadcast source must never be answered (no reflector)."""
    s = server()
    assert feed(s, E1, src=(ip, 40000)) == ([], [])
    assert dropped(s) == {"s3_source_not_global": 1}


def test_s3_accepts_lab_ranges_like_miredo():
    s = server()
    for ip in ("198.18.0.1", "100.64.0.1", "240.0.0.1", "203.0.113.1"):
        out, _ = feed(s, E1, src=(ip, 1))
        assert len(out) == 1


def test_s5_teredo_source_must_come_from_its_mapping():
    s = server()
    ping = E7
    assert feed(s, ping, src=("198.51.100.8", 40000)) == ([], [])
    assert feed(s, ping, src=("198.51.100.7", 40001)) == ([], [])
    assert dropped(s) == {"s5_mapping_mismatch": 2}
    _, raw = feed(s, ping, src=CLIENT_MAP)
    assert raw == [E7]


def test_s6_native_source_only_to_our_own_clients():
    s = server()
    out, _ = feed(s, E4, src=RELAY)
    assert out == [(0, E5, CLIENT_MAP)]
    other_server_client = build_teredo(0x20010000, "203.0.113.77", 0, 40000, "198.51.100.7")
    b = bubble(E4[8:24], other_server_client)
    assert feed(s, b, src=RELAY) == ([], [])
    assert dropped(s) == {"s7_not_for_us": 1}


def test_s6_compares_with_the_primary_not_the_secondary():
    s = server()
    to_secondary_client = build_teredo(0x20010000, SECONDARY, 0, 40000, "198.51.100.7")
    assert feed(s, bubble(NATIVE, to_secondary_client), src=RELAY) == ([], [])
    assert dropped(s) == {"s7_not_for_us": 1}


@pytest.mark.parametrize(
    "src6, dst6",
    [
        (NATIVE, ipv6_pack("2001:db8::2")),  # native to native: open relay
        (ipv6_pack("fe80::1"), ipv6_pack("2001:db8::2")),
        (NATIVE, ipv6_pack("ff02::1")),
        (ipv6_pack("3ffe:831f::1"), OTHER_PEER[:4] + bytes(4) + OTHER_PEER[8:]),
    ],
)
def test_s7_everything_else_is_dropped(src6, dst6):
    s = server()
    echo = echo_request(src6, dst6, 1, 1, b"x" * 8)
    assert feed(s, echo, src=RELAY) == ([], [])
    assert feed(s, bubble(src6, dst6), src=RELAY) == ([], [])
    assert dropped(s) == {"s7_not_for_us": 2}


def test_non_default_prefix_is_the_only_teredo_prefix():
    s = ServerRole(PRIMARY, SECONDARY, 0x3FFE831F)
    client_alt = build_teredo(0x3FFE831F, PRIMARY, 0, 40000, "198.51.100.7")
    out, _ = feed(s, bubble(NATIVE, client_alt), src=RELAY)
    assert len(out) == 1
    assert feed(s, bubble(NATIVE, CLIENT), src=RELAY) == ([], [])  # 2001:: is not Teredo here
    out, _ = feed(s, router_solicitation(b"x" * 8))
    pio_prefix = parse_datagram(out[0][1]).ipv6[40 + 16 + 16 : 40 + 16 + 24]
    assert pio_prefix == bytes.fromhex("3ffe831fc0000201")


# -- actions A1-A6 ----------------------------------------------------------------------------


def test_a1_no_loop_with_our_own_sockets():
    s = server()
    for own in (PRIMARY, SECONDARY):
        assert feed(s, E4, src=(own, 3544)) == ([], [])
    assert dropped(s) == {"a1_loop": 2}
    out, _ = feed(s, E4, src=(PRIMARY, 3545))  # other port: not our socket
    assert len(out) == 1


def test_a2_only_router_solicitations_to_all_routers_or_our_link_local():
    s = server()
    echo_all_routers = echo_request(CLIENT, ALL_ROUTERS, 1, 1, b"")
    echo_our_ll = echo_request(CLIENT, server_link_local(PRIMARY), 1, 1, b"")
    bubble_ll = bubble(CLIENT, server_link_local(PRIMARY))
    for p in (echo_all_routers, echo_our_ll, bubble_ll):
        assert feed(s, p) == ([], [])
    assert dropped(s) == {"a2_not_rs": 3}


@pytest.mark.parametrize("dst", ["::", "::1", "fe80::1", "febf::1", "ff0e::1", "ff02::1"])
def test_a3_non_global_destinations(dst):
    s = server()
    assert feed(s, echo_request(CLIENT, ipv6_pack(dst), 1, 1, b"")) == ([], [])
    assert dropped(s) == {"a3_dst_not_global": 1}


def test_a3_site_local_and_ula_count_as_global_like_miredo():
    s = server()
    for dst in ("fec0::1", "fd00::1"):
        _, raw = feed(s, echo_request(CLIENT, ipv6_pack(dst), 1, 1, b""))
        assert len(raw) == 1


def test_a4_icmpv6_over_88_payload_bytes_is_not_relayed():
    s = server()
    ok = echo_request(CLIENT, NATIVE, 1, 1, bytes(88 - 8))
    big = echo_request(CLIENT, NATIVE, 1, 1, bytes(89 - 8))
    assert feed(s, ok)[1] == [ok]
    assert feed(s, big) == ([], [])
    big_to_client = echo_request(NATIVE, CLIENT, 1, 1, bytes(200))
    assert feed(s, big_to_client, src=RELAY) == ([], [])
    assert dropped(s) == {"a4_icmpv6_too_big": 2}


def test_a5_ping_test_goes_to_native_ipv6_without_trailers_or_headers():
    s = server()
    datagram = build_datagram(E7 + b"TRAILER", Auth(nonce=b"q" * 8), Origin("1.2.3.4", 5))
    out, raw = feed(s, datagram)
    assert out == [] and raw == [E7]
    assert s.counters.raw6_out_packets == 1 and s.counters.raw6_out_bytes == len(E7)


def test_a6_forward_with_origin_and_trailers_kept():
    s = server()
    trailer = bytes([1, 4, 1, 2, 3, 4])  # an RFC 6081-style nonce trailer
    out, raw = feed(s, E4 + trailer, src=RELAY)
    assert out == [(0, E5 + trailer, CLIENT_MAP)] and raw == []


def test_a6_from_a_teredo_client_to_another_of_our_clients():
    s = server()
    b = bubble(CLIENT, OTHER_PEER)
    out, _ = feed(s, b, src=CLIENT_MAP, sock=1)
    assert out == [(0, Origin(*CLIENT_MAP).pack() + b, ("203.0.113.9", 50000))]


def test_a6_mapped_address_must_be_global():
    s = server()
    private = build_teredo(0x20010000, PRIMARY, 0, 40000, "10.0.0.7")
    assert feed(s, bubble(NATIVE, private), src=RELAY) == ([], [])
    assert dropped(s) == {"a6_mapped_not_global": 1}


def test_a6_no_forwarding_to_other_servers_clients():
    """miredo forwards these without an origin; we refuse to be an open bouncer."""
    s = server()
    foreign = build_teredo(0x20010000, "203.0.113.77", 0, 40000, "198.51.100.7")
    assert feed(s, bubble(CLIENT, foreign)) == ([], [])
    assert dropped(s) == {"a6_not_our_client": 1}


# -- rate limits ------------------------------------------------------------------------------


def test_rs_rate_limit_per_source():
    s = server()
    answered = sum(len(feed(s, E1, now=10.0)[0]) for _ in range(80))
    assert answered == 50
    assert dropped(s) == {"rs_rate_limited": 30}
    # another source is not affected
    assert len(feed(s, E1, src=("198.51.100.99", 1), now=10.0)[0]) == 1
    # 1 s later: 20 more tokens
    assert sum(len(feed(s, E1, now=11.0)[0]) for _ in range(40)) == 20


def test_rs_global_cap():
    s = server(limits=ServerLimits(rs_total=Rate(1, 5)))
    sources = [(f"198.51.100.{i}", 1000) for i in range(1, 11)]
    answered = sum(len(feed(s, E1, src=src, now=5.0)[0]) for src in sources)
    assert answered == 5 and s.rs_total.denied == 5


def test_raw6_per_source_and_global_caps():
    s = server(limits=ServerLimits(raw6_per_source=Rate(1, 3), raw6_total=Rate(1, 4)))
    sent = sum(len(feed(s, E7, now=1.0)[1]) for _ in range(10))
    assert sent == 3
    other = build_teredo(0x20010000, PRIMARY, 0, 1, "198.51.100.8")
    ping2 = echo_request(other, NATIVE, 1, 1, b"")
    sent2 = sum(len(feed(s, ping2, src=("198.51.100.8", 1), now=1.0)[1]) for _ in range(10))
    assert sent2 == 1  # the global bucket had 4 tokens
    assert dropped(s) == {"raw6_rate_limited": 16}


def test_forward_rate_limit_per_source():
    s = server(limits=ServerLimits(forward_per_source=Rate(10, 20)))
    n = sum(len(feed(s, E4, src=RELAY, now=3.0)[0]) for _ in range(30))
    assert n == 20 and dropped(s) == {"forward_rate_limited": 10}
    n = sum(len(feed(s, E4, src=("203.0.113.6", 3545), now=3.0)[0]) for _ in range(5))
    assert n == 5


def test_unlimited_limits_behave_like_miredo():
    s = server(limits=ServerLimits.unlimited())
    assert sum(len(feed(s, E1, now=1.0)[0]) for _ in range(1000)) == 1000


def test_housekeeping_forgets_refilled_buckets():
    s = server()
    for i in range(100):
        feed(s, E1, src=(f"198.51.100.{i + 1}", 1), now=1.0)
    assert len(s.rs_limiter) == 100
    assert s.next_timer() == 10.0
    s.handle_timer(5.0)  # not due: nothing happens
    assert len(s.rs_limiter) == 100
    s.handle_timer(10.0)
    assert len(s.rs_limiter) == 0 and s.next_timer() == 20.0


# -- construction and status ----------------------------------------------------------------


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"primary address 10\.0\.0\.1: not a global"):
        ServerRole("10.0.0.1")
    with pytest.raises(ValueError, match=r"secondary address 192\.168\.1\.1"):
        ServerRole(PRIMARY, "192.168.1.1")
    with pytest.raises(ValueError, match="not an IPv4"):
        ServerRole("server.example")
    with pytest.raises(ValueError, match="MTU 1279"):
        ServerRole(PRIMARY, mtu=1279)
    with pytest.raises(ValueError, match="prefix"):
        ServerRole(PRIMARY, prefix=0xFF020000)
    with pytest.raises(ValueError, match="same as the primary"):
        ServerRole(PRIMARY, PRIMARY)
    assert ServerRole("203.0.113.10").secondary == "203.0.113.11"


def test_from_config_reads_the_server_directives(tmp_path):
    conf = tmp_path / "miredo-server.conf"
    conf.write_text("ServerBindAddress 203.0.113.10\nPrefix 3ffe:831f::\nInterfaceMTU 1400\n")
    s = ServerRole.from_config(load_config(str(conf)))
    assert (s.primary, s.secondary, s.mtu) == ("203.0.113.10", "203.0.113.11", 1400)
    assert s.prefix == 0x3FFE831F
    conf.write_text("ServerBindAddress 203.0.113.10\nServerBindAddress2 203.0.113.20\n")
    s = ServerRole.from_config(load_config(str(conf)))
    assert (s.secondary, s.mtu, s.prefix) == ("203.0.113.20", 1280, 0x20010000)


def test_status_is_json_and_reports_counts():
    s = server()
    feed(s, E1)
    feed(s, E1, src=("10.0.0.1", 1))
    st_ = json.loads(json.dumps(s.status()))
    assert st_["role"] == "server" and st_["server"] == PRIMARY and st_["server2"] == SECONDARY
    assert st_["prefix"] == "2001::/32" and st_["mtu"] == 1280
    assert st_["counters"]["udp_in_packets"] == 2
    assert st_["counters"]["drops"] == {"s3_source_not_global": 1}
    assert st_["handled"] == {"ra_sent": 1}
    assert st_["ratelimit"]["rs_per_source"]["keys"] == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 1))
def test_arbitrary_bytes_never_raise(data, sock):
    s = server()
    s.receive_datagram(data, CLIENT_MAP, sock, 1.0)
    assert s.counters.udp_in_packets == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_arbitrary_ipv6_payloads_never_raise(tail):
    s = server()
    s.receive_datagram(E1[:13] + bytes([0x60, 0, 0, 0]) + tail, CLIENT_MAP, 0, 1.0)
    s.receive_datagram(E4[:4] + tail, RELAY, 0, 1.0)
    assert s.counters.udp_in_packets == 2


@pytest.mark.parametrize(
    "data, src, reason",
    [
        (b"\x60" * 10, ("10.0.0.1", 1), "s1_malformed"),  # S1 before S3
        (build_ipv6(CLIENT, NATIVE, 17, b""), ("10.0.0.1", 1), "s2_not_bubble_or_icmpv6"),
        (E7, ("10.0.0.1", 1), "s3_source_not_global"),  # S3 before S5
        (E7, (PRIMARY, 3544), "s5_mapping_mismatch"),  # S5 before A1
        (E1, (PRIMARY, 3544), "a1_loop"),  # A1 before A2
        (echo_request(CLIENT, ipv6_pack("fe80::1"), 1, 1, bytes(200)), CLIENT_MAP,
         "a3_dst_not_global"),  # A3 before A4
        (echo_request(CLIENT, OTHER_PEER, 1, 1, bytes(200)), CLIENT_MAP,
         "a4_icmpv6_too_big"),  # A4 before A6
    ],
)
def test_checks_apply_in_miredos_order(data, src, reason):
    s = server()
    assert feed(s, data, src=src) == ([], [])
    assert dropped(s) == {reason: 1}
