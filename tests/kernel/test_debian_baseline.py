"""Debian's miredo in every role: the baseline our engine is measured against.

miredo-server, a miredo relay (cone, UDP 3545) and two miredo clients behind two NATs.
With two restricted NATs every path passes; with NAT #2 symmetric the client still
qualifies and reaches the relay, but client-to-client fails (miredo 1.2.6 has no symmetric
NAT traversal; RFC 6081 would close that gap).
"""

from __future__ import annotations

import ipaddress

import pytest

from miredoctl.lab import Lab
from tests.kernel.harness import DEBIAN, Stack, decode_teredo, start_stack, teredo_address
from tests.kernel.paths import PATHS, format_table, run_paths

pytestmark = pytest.mark.kernel


def _check_qualified(lab: Lab, stack: Stack) -> list[str]:
    """Every client's address carries the lab's server and its own NAT's public address."""
    lines = []
    wan = {"cli": lab.spec.nat_wan, "cli2": lab.spec.nat2_wan}
    for role, c in stack.clients.items():
        assert ipaddress.IPv6Address(c.address) in lab.spec.teredo_network
        parts = decode_teredo(c.address)
        assert parts.server == lab.spec.srv_ip1
        assert parts.client == wan[role]
        assert parts.port != 0
        lines.append(f"qualification: {role} {c.qualify_seconds:.3f}s {c.address} "
                     f"(server {parts.server}, flags 0x{parts.flags:04x}, "
                     f"mapped {parts.client}:{parts.port})")
    return lines


def _stop_and_check(lab: Lab, stack: Stack) -> None:
    """SIGTERM to each parent PID ends miredo cleanly (status 0) and removes its tunnel."""
    codes = stack.stop()
    assert codes == dict.fromkeys(codes, 0), stack.logs()
    for role in ("rly", "cli", "cli2"):
        assert teredo_address(lab, role, lab.spec.teredo_if) is None


def _report(capsys, title: str, qual: list[str], rows) -> None:
    with capsys.disabled():
        print("\n" + "\n".join([title, *qual, format_table(rows)]), flush=True)


def test_debian_everywhere_all_eight_paths_pass(debian_miredo, lab_factory, run_dir, capsys):
    lab = lab_factory()
    stack = start_stack(lab, run_dir, DEBIAN)
    try:
        assert set(stack.clients) == {"cli", "cli2"}
        qual = _check_qualified(lab, stack)
        rows = run_paths(lab, stack.addresses())
        _report(capsys, "Debian miredo, two restricted NATs", qual, rows)
        assert [r.path for r in rows] == list(PATHS)
        failed = [f"{r.path.name}: {r.result.summary()}" for r in rows if r.verdict != "PASS"]
        assert not failed, "; ".join(failed) + "\n" + stack.logs()
        for line in ("New Teredo address/MTU", "Teredo pseudo-tunnel started"):
            assert line in stack.clients["cli"].daemon.log_text()
    finally:
        _stop_and_check(lab, stack)


def test_debian_behind_symmetric_nat_no_client_to_client(debian_miredo, lab_factory, run_dir,
                                                         capsys):
    lab = lab_factory(nat2_type="symmetric")
    stack = start_stack(lab, run_dir, DEBIAN)
    try:
        qual = _check_qualified(lab, stack)  # cli2 qualifies behind the symmetric NAT
        rows = run_paths(lab, stack.addresses())
        _report(capsys, "Debian miredo, NAT #2 symmetric", qual, rows)
        got = {r.path.name: r.verdict for r in rows}
        # miredo accepts the relay's bubbles from a mismatched mapping when the nonce checks
        # out, so relay paths work; direct client-to-client hole punching cannot.
        expected = {p.name: ("FAIL" if {p.src, p.dst} == {"cli", "cli2"} else "PASS")
                    for p in PATHS}
        assert got == expected, stack.logs()
    finally:
        _stop_and_check(lab, stack)
