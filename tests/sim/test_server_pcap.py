"""Replay what Debian's miredo clients and relay sent to miredo-server in the lab through our
ServerRole: it must answer with exactly the bytes miredo-server put on the wire.

The vectors (tests/vectors/lab_pcaps.txt) were captured once from the bash lab; see its header.
"""

from __future__ import annotations

from pathlib import Path

from engine.proto.server import ServerRole
from engine.proto.wire import parse_datagram

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "lab_pcaps.txt"
SERVER = ("203.0.113.10", 3544)


def _endpoint(text: str) -> tuple[str, int]:
    ip, port = text.rsplit(":", 1)
    return ip, int(port)


def frames() -> list[tuple[str, tuple[str, int], tuple[str, int], bytes]]:
    out = []
    for line in VECTORS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        tag, src, dst, *_, payload = line.split()
        out.append((tag, _endpoint(src), _endpoint(dst), bytes.fromhex(payload)))
    return out


def test_our_server_sends_what_miredo_server_sent():
    all_frames = frames()
    to_server = [f for f in all_frames if f[2] == SERVER]
    from_server = {(f[2], f[3]) for f in all_frames if f[1] == SERVER}
    assert len(to_server) >= 6 and len(from_server) >= 4  # the file has what we expect

    srv = ServerRole(SERVER[0], now=0.0)
    ours: set[tuple[tuple[str, int], bytes]] = set()
    raw: list[tuple[bytes, bytes]] = []
    for _, src, _, payload in to_server:
        srv.receive_datagram(payload, src, 0, 1.0)
        ours.update((dst, data) for _, data, dst in srv.udp_out)
        raw.extend((payload, pkt) for pkt in srv.raw6_out)
        srv.udp_out.clear()
        srv.raw6_out.clear()
    assert ours == from_server
    assert srv.counters.drops == {}
    # ping tests went to native IPv6 as the bare IPv6 packet
    assert len(raw) == 3
    for sent, pkt in raw:
        assert pkt == parse_datagram(sent).ipv6 and pkt[40] == 128
