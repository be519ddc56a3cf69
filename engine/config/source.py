"""Reading a config file's bytes, bounded.

Why not `open(path).read()`: `-c` may name anything. A FIFO blocks the open until someone
writes to it (`teredo-engine --check` hung), and `/dev/zero` or `/dev/urandom` never end (it read
until memory ran out). miredo.conf is a few hundred bytes, so only a regular file of at most
MAX_CONFIG_BYTES is read; anything else is one `path: message` line, like every config problem.
"""

from __future__ import annotations

import os
import stat

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: thousands of times a real miredo.conf

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotAConfigFile(OSError):
    """The path exists but is no regular file of a sensible size; `str()` says which."""


def read_config_bytes(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The whole content of the regular file `path`, at most `limit` bytes.

    Raises OSError as `open` would (missing file, permission), or NotAConfigFile. The open is
    non-blocking so that a FIFO is refused instead of waiting for a writer; the size is checked
    both before reading and while reading (a file that grows meanwhile).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise NotAConfigFile(f"is {kind}, not a regular file")
        if info.st_size > limit:
            raise NotAConfigFile(_too_large(info.st_size, limit))
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise NotAConfigFile(_too_large(total, limit))
            chunks.append(chunk)
    finally:
        os.close(fd)


def _too_large(size: int, limit: int) -> str:
    return (f"is larger than {limit // 1024} KiB ({size} bytes or more); a miredo.conf is a "
            "few hundred bytes")
