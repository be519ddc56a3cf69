"""Keep only the capabilities the privileged parent still needs, for the rest of its life.

The parent stays uid 0 (it owns the pid file, the status socket and the TUN device), but uid 0
alone is not what makes it dangerous: the capability sets are.  Once start-up is done it needs
only what re-creating a worker and configuring the tunnel take:

    CAP_NET_ADMIN    rtnetlink (address, routes, MTU, link state), TUNSETIFF, sysctl writes
    CAP_NET_RAW      the server's raw IPv6 socket, re-opened when a reload asks for it
    CAP_SETUID/GID   the forked worker becomes its unprivileged account
    CAP_SYS_CHROOT   the forked worker chroots
    CAP_KILL         signalling the worker, which runs under another uid
    CAP_NET_BIND_SERVICE  a reload that moves `BindPort` below 1024

Everything else (CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, CAP_SYS_MODULE, CAP_SYS_PTRACE...) leaves
the effective, permitted and inheritable sets, and the bounding set, so not even an exec of a
setuid-root program can bring it back.  miredo's parent does the same with five capabilities.

The calls are `engine.runtime.privcalls`' (the standard library has no binding for capset(2)
and the bounding-set prctl(2)s); this module is imported while still root and holds no state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from engine.runtime import privcalls

CAP = {
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4,
    "kill": 5, "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9,
    "net_bind_service": 10, "net_broadcast": 11, "net_admin": 12, "net_raw": 13,
    "ipc_lock": 14, "ipc_owner": 15, "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18,
    "sys_ptrace": 19, "sys_pacct": 20, "sys_admin": 21, "sys_boot": 22, "sys_nice": 23,
    "sys_resource": 24, "sys_time": 25, "sys_tty_config": 26, "mknod": 27, "lease": 28,
    "audit_write": 29, "audit_control": 30, "setfcap": 31, "mac_override": 32,
    "mac_admin": 33, "syslog": 34, "wake_alarm": 35, "block_suspend": 36, "audit_read": 37,
    "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
}
"""Capability numbers of linux/capability.h (stable kernel ABI)."""

PARENT_CAPABILITIES: tuple[str, ...] = (
    "net_admin", "net_raw", "net_bind_service", "setuid", "setgid", "sys_chroot", "kill",
)
"""What the privileged parent keeps after start-up (see the module docstring for why)."""

class CapabilityError(OSError):
    """capset/prctl refused; ``str()`` is one line naming the call."""


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAP.values())


def mask(names: Iterable[str]) -> int:
    """The bit mask of capability names; an unknown name is a programming error."""
    m = 0
    for name in names:
        m |= 1 << CAP[name]
    return m


def keep_only(names: Iterable[str]) -> int:
    """Reduce this process to `names`: bounding set first (needs CAP_SETPCAP, which is then
    dropped with the rest), then effective = permitted = the kept set, inheritable empty.
    A capability the process does not hold is not asked for (an engine started with fewer
    capabilities, e.g. by a hardened service unit, keeps what it has of `names`).
    Returns the kept mask.  Raises CapabilityError when the kernel refuses."""
    with open("/proc/self/status") as f:
        held = current(f.read()).get("CapPrm", 0)
    keep = mask(names) & held
    for cap in range(last_cap() + 1):
        if keep & (1 << cap):
            continue
        try:
            in_bounding_set = privcalls.prctl(privcalls.PR_CAPBSET_READ, cap) == 1
        except OSError:  # a number this kernel does not know: nothing to drop
            continue
        if in_bounding_set:
            try:
                privcalls.prctl(privcalls.PR_CAPBSET_DROP, cap)
            except OSError as e:
                raise CapabilityError(
                    e.errno, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(e.errno or 0)}"
                ) from None
    try:
        privcalls.capset(keep, keep, 0)
    except OSError as e:
        raise CapabilityError(e.errno, f"capset: {os.strerror(e.errno or 0)}") from None
    return keep


def current(status_text: str) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd of a /proc/PID/status text, as ints."""
    out: dict[str, int] = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            out[key] = int(value.strip(), 16)
    return out


def names_of(m: int) -> list[str]:
    """Capability names in a mask, for logs and status."""
    return [name for name, bit in sorted(CAP.items(), key=lambda kv: kv[1]) if m & (1 << bit)]
