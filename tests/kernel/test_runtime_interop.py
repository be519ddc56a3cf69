"""Our engine's runtime under real roles in the project lab, next to Debian's miredo.

The shell (privilege split, TUN, pyroute2 configuration, loop) must carry every path of the
lab: our engine in every role, and Debian's miredo clients against our server and relay.
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.kernel.harness import DEBIAN, OURS, decode_teredo, start_stack, teredo_address
from tests.kernel.paths import PATHS, run_paths

pytestmark = pytest.mark.kernel


def _run(lab, run_dir, impl, overrides):
    stack = start_stack(lab, run_dir, impl, overrides)
    try:
        for c in stack.clients.values():
            assert ipaddress.IPv6Address(c.address) in lab.spec.teredo_network
            assert decode_teredo(c.address).server == lab.spec.srv_ip1
        rows = run_paths(lab, stack.addresses())
        assert [r.path for r in rows] == list(PATHS)
        failed = [f"{r.path.name}: {r.result.summary()}" for r in rows if r.verdict != "PASS"]
        assert not failed, "; ".join(failed) + "\n" + stack.logs()
    finally:
        codes = stack.stop()
        assert codes == dict.fromkeys(codes, 0), stack.logs()
        for role in ("rly", "cli", "cli2"):
            assert teredo_address(lab, role, lab.spec.teredo_if) is None


def test_ours_in_every_role_all_paths(debian_miredo, lab_factory, run_dir):
    _run(lab_factory(), run_dir, OURS, {})


def test_debian_clients_through_our_server_and_relay(debian_miredo, lab_factory, run_dir):
    _run(lab_factory(), run_dir, DEBIAN, {"server": OURS, "relay": OURS})


def test_our_clients_with_debian_server_and_relay(debian_miredo, lab_factory, run_dir):
    _run(lab_factory(), run_dir, OURS, {"server": DEBIAN, "relay": DEBIAN})
