"""A minimal STUN binding responder for the lab's UPnP NAT (`symmetric-upnp`).

miniupnpd refuses to forward ports when its WAN address is in a reserved range, and every lab
address is (documentation ranges only).  Its way out is a STUN test (`ext_perform_stun=yes`):
when every binding request it sends is answered with its own address and port, it concludes
that nothing filters or translates in front of it, and forwards ports.  In the lab that is the
truth: the NAT's WAN sits directly on the lab's "IPv4 internet".  This responder answers every
STUN Binding request with a MAPPED-ADDRESS from the socket it came in on; it does not
honour CHANGE-REQUEST (miniupnpd only counts the answers), so it is a lab fixture, not a STUN
server.

    python -m teredolab.stun ADDRESS PORT
"""

from __future__ import annotations

import socket
import struct
import sys

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
MAPPED_ADDRESS = 0x0001


def answer(request: bytes, source: tuple[str, int]) -> bytes | None:
    """The Binding success response to `request` from `source`, or None to stay silent."""
    if len(request) < 20 or len(request) > 548:
        return None
    mtype, _length = struct.unpack_from("!HH", request)
    if mtype != BINDING_REQUEST:
        return None
    # Bytes 4-20 (magic cookie or RFC 3489's longer id, then the transaction id) go back as
    # they came; the plain MAPPED-ADDRESS needs no cookie to read.
    attr = struct.pack("!HHBBH4s", MAPPED_ADDRESS, 8, 0, 1, source[1], socket.inet_aton(source[0]))
    return struct.pack("!HH", BINDING_SUCCESS, len(attr)) + request[4:20] + attr


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m teredolab.stun ADDRESS PORT", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((argv[0], int(argv[1])))
    while True:
        data, source = sock.recvfrom(2048)
        reply = answer(data, source)
        if reply is not None:
            sock.sendto(reply, source)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
