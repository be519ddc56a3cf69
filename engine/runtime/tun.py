"""The Linux TUN device (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``).

miredo opens the device without IFF_NO_PI and strips a 4-byte header from every frame; with
IFF_NO_PI a read returns the bare IPv6 packet, which saves a slice per packet on the hot path
and has no effect on the wire.  The device is not persistent: it vanishes when the last
descriptor closes, so a crash never leaves a stale interface behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


class TunError(Exception):
    """The TUN device cannot be opened; ``str()`` is the one line for the user."""


class Tun:
    """An open TUN device: `fd` (non-blocking, close-on-exec), `name`, `index`."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.index = socket.if_nametoindex(name)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_tun(name: str | None) -> Tun:
    """Create (or attach to) the TUN interface `name`; None lets the kernel pick ``tunN``."""
    if name is not None and (not name or len(name.encode()) >= IFNAMSIZ or "/" in name):
        raise TunError(f"invalid interface name {name!r} (InterfaceName, at most 15 bytes)")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise TunError(f"cannot open /dev/net/tun: {e.strerror}")
    try:
        ifr = struct.pack("16sH22x", (name or "").encode(), IFF_TUN | IFF_NO_PI)
        try:
            out = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise TunError(
                    f"interface {name} is busy (another instance is running?)"
                )
            if e.errno == errno.EPERM:
                raise TunError(f"cannot create interface {name}: root privileges needed")
            raise TunError(f"cannot create interface {name}: {e.strerror}")
        real = out[:IFNAMSIZ].split(b"\0", 1)[0].decode()
        return Tun(fd, real)
    except BaseException:
        os.close(fd)
        raise
