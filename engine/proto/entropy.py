"""The roles' default random source when none is injected (tests, tools): `secrets`.

The runtime always injects its own (`engine.runtime.entropy`, `os.urandom`: the protocol core
does no I/O), so `secrets` and what it imports (`hashlib`, `hmac`, `random`) are loaded only
when a role is built without one, never on the engine's run path (docs/performance.md).
"""

from __future__ import annotations


def token_bytes(n: int) -> bytes:
    """`secrets.token_bytes(n)`, imported on first use."""
    import secrets

    return secrets.token_bytes(n)


def randbits(k: int) -> int:
    """`secrets.randbits(k)`, imported on first use."""
    import secrets

    return secrets.randbits(k)
