"""The two facts about a running engine that both `status` and the health listener read: its
status-socket answer (contract §4) and what a Teredo address on its tunnel says.

Kept among the listeners because they run inside supervisord and import none of the command's
modules (docs/architecture.md); the command imports this one, so both read an engine the same
way.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

TEREDO_NET = ipaddress.IPv6Network("2001::/32")
SOCKET_TIMEOUT = 2.0


def query_engine(path: Path, timeout: float = SOCKET_TIMEOUT) -> Any:
    """One `status` request on teredo-engine's status socket (contract §4)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"status\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks).decode())


def decode_teredo(address: str) -> tuple[str, str, int] | None:
    """(server IPv4, mapped IPv4, mapped port) of a Teredo address (RFC 4380 §4); None for
    any other address. This is how an engine without a status socket (Debian's miredo) is
    read: its address on the tunnel interface says all three."""
    try:
        addr = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    if addr not in TEREDO_NET:
        return None
    raw = addr.packed
    port = int.from_bytes(raw[10:12], "big") ^ 0xFFFF
    client = str(ipaddress.IPv4Address(bytes(b ^ 0xFF for b in raw[12:16])))
    return str(ipaddress.IPv4Address(raw[4:8])), client, port
