"""The Qualifier against miredo's own bytes from the lab: our RS equals the miredo client's RS
for the same nonce, and the RA miredo-server sent back qualifies us with the lab's mapping."""

from __future__ import annotations

from pathlib import Path

from engine.proto.addr import build_teredo
from engine.proto.events import InterfaceUp
from engine.proto.qualify import Qualifier

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "lab_pcaps.txt"


def _frame(tag: str) -> bytes:
    for line in VECTORS.read_text().splitlines():
        if line.startswith(tag + " "):
            return bytes.fromhex(line.split()[-1])
    raise AssertionError(f"{tag} missing from {VECTORS}")


def test_rs_and_ra_from_the_lab():
    rs, ra = _frame("qualify.pcap#1"), _frame("qualify.pcap#2")
    nonce = rs[4:12]
    q = Qualifier("203.0.113.10", now=0.0, token_bytes=lambda n: nonce,
                  randbits=lambda k: 0x00C9 if k == 16 else 0)
    q.handle_timer(0.0)
    assert q.udp_out == [(0, rs, ("203.0.113.10", 3544))]
    q.receive_datagram(ra, ("203.0.113.10", 3544), 0, 0.001)
    # flags 0x00c9 as the lab's miredo client drew them: the very address it configured
    expected = build_teredo(0x20010000, "203.0.113.10", 0x00C9, 50092, "198.51.100.1")
    assert [e for e in q.events if isinstance(e, InterfaceUp)] == [InterfaceUp(expected, 1280)]
    assert q.address == expected and q.mapping == ("198.51.100.1", 50092)
    assert q.address.hex() == "20010000cb00710a00c93c5339cc9bfe"
