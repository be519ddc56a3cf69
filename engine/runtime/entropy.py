"""The worker's random numbers (nonces, keys, jitter), straight from the kernel.

`secrets.token_bytes` and `secrets.randbits` are `os.urandom` underneath; importing `secrets`
itself pulls in `hmac`, `hashlib` (which maps OpenSSL's libcrypto), `random` and `base64`,
about 2 MiB of PSS in every engine process tree and a few milliseconds before the first
packet (docs/performance.md, "Idle memory").  These two give the same values.
"""

from __future__ import annotations

import os

token_bytes = os.urandom
"""`token_bytes(n)`: n random bytes (what `secrets.token_bytes(n)` returns)."""


def randbits(k: int) -> int:
    """A random integer of `k` bits, as `secrets.randbits(k)` (`SystemRandom.getrandbits`)."""
    if k < 0:
        raise ValueError("number of bits must be non-negative")
    if k == 0:
        return 0
    size = (k + 7) // 8
    return int.from_bytes(os.urandom(size), "big") >> (size * 8 - k)
