"""The flood's sender: one small UDP/IPv6 packet to each of N distinct Teredo destinations.

Run by `bench.flood` inside the lab's native IPv6 host namespace (`ip netns exec <v6> python -m
bench.flood_send ...`); prints one JSON line (packets sent, send errors, start and end as Unix
time, the rate reached) when done. Kept apart from `bench.flood` so that the process in the
namespace imports nothing but the standard library.

The destinations are Teredo addresses under the lab server's prefix, `2001:0:<server IPv4>::/64`
style, non-cone (flags 0), each with its own mapped address and port: mapped addresses from
TEST-NET-1 (192.0.2.1, 192.0.2.2, ...: no lab host has them, so the server's forwarded bubbles
go nowhere and the NATs see nothing), 50,000 ports each (10000-59999). Every packet therefore
makes the relay create one peer entry, queue the packet and send one indirect bubble through
the lab server, which is what any IPv6 host can make a public relay do.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time

FLOOD_V4 = ipaddress.IPv4Network("192.0.2.0/24")
FIRST_PORT = 10_000
PORTS_PER_ADDRESS = 50_000
MAX_DESTINATIONS = (FLOOD_V4.num_addresses - 2) * PORTS_PER_ADDRESS


def teredo_address(prefix: str, server: str, flags: int, port: int, client: str) -> str:
    """RFC 4380 section 4: prefix (32 bits), server IPv4, flags, port and client IPv4 both
    obfuscated (XOR with all ones)."""
    p = ipaddress.IPv6Address(prefix).packed[:4]
    b = (p + ipaddress.IPv4Address(server).packed + flags.to_bytes(2, "big")
         + (port ^ 0xFFFF).to_bytes(2, "big")
         + bytes(x ^ 0xFF for x in ipaddress.IPv4Address(client).packed))
    return str(ipaddress.IPv6Address(b))


def destinations(server: str, n: int, prefix: str = "2001:0::") -> list[str]:
    """N distinct Teredo destinations under `server`'s prefix (see the module docstring)."""
    if not 0 < n <= MAX_DESTINATIONS:
        raise ValueError(f"destinations: 1-{MAX_DESTINATIONS}, got {n}")
    first = int(FLOOD_V4.network_address) + 1
    return [teredo_address(prefix, server, 0, FIRST_PORT + i % PORTS_PER_ADDRESS,
                           str(ipaddress.IPv4Address(first + i // PORTS_PER_ADDRESS)))
            for i in range(n)]


def send(addrs: list[str], rate: float, size: int, port: int) -> dict:
    """One datagram per address; `rate` packets/s (0: as fast as the socket takes them).

    Paced in bursts of 100 against a schedule from the start (a late burst is not followed by
    a catch-up pause), so the offered rate is the same for every relay measured.
    """
    payload = b"\x00" * max(0, size - 48)  # 40 bytes IPv6 header + 8 bytes UDP
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sent = errors = 0
    last_error = ""
    sendto = s.sendto
    t0 = time.monotonic()
    start = time.time()
    for i, addr in enumerate(addrs):
        if rate and i % 100 == 0:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            sendto(payload, (addr, port))
            sent += 1
        except OSError as e:  # ENOBUFS and the like: counted, never retried
            errors += 1
            last_error = str(e)
    elapsed = time.monotonic() - t0
    s.close()
    return {"sent": sent, "errors": errors, "last_error": last_error, "start": start,
            "end": start + elapsed, "seconds": elapsed,
            "rate_pps": sent / elapsed if elapsed > 0 else None, "packet_bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood_send", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True, help="the Teredo server's IPv4 in the addresses")
    ap.add_argument("--prefix", default="2001:0::", help="Teredo prefix (default 2001:0::)")
    ap.add_argument("--destinations", type=int, required=True)
    ap.add_argument("--rate", type=float, default=10_000, help="packets/s, 0 = flat out")
    ap.add_argument("--size", type=int, default=100, help="IPv6 packet bytes (>= 48)")
    ap.add_argument("--port", type=int, default=9, help="UDP destination port (discard)")
    a = ap.parse_args(argv)
    addrs = destinations(a.server, a.destinations, a.prefix)
    print(json.dumps(send(addrs, a.rate, a.size, a.port)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
