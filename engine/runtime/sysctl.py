"""Per-interface IPv6 settings, written to /proc (``net.ipv6.conf.IF.KEY``).

Apart from `engine.runtime.netlink` on purpose: a client's parent prepares its TUN device
before it sets up its rtnetlink host watch (it forks the worker first).  A /proc write needs
no netlink socket and no process.
"""

from __future__ import annotations

import contextlib


def write_sysctl(ifname: str, key: str, value: str) -> None:
    """Set ``net.ipv6.conf.IFNAME.KEY``; `OSError` when the kernel refuses."""
    with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
        f.write(value)


def prepare_interface(ifname: str) -> None:
    """Before the link first comes up: IPv6 on, no kernel-generated link-local.

    A TUN device is NOARP, so no DAD runs; the kernel would however add its own random
    link-local on some kernels, and the Teredo link-local is the only one we want.  Best
    effort: a kernel without these knobs runs the tunnel all the same.
    """
    for key, value in (("disable_ipv6", "0"), ("addr_gen_mode", "1")):
        with contextlib.suppress(OSError):
            write_sysctl(ifname, key, value)
