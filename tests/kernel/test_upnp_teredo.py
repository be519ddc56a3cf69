"""RFC 6081 §3.2 end to end: our client behind a random-port symmetric NAT with a real UPnP IGD
(Debian's miniupnpd, the lab's `symmetric-upnp` NAT 2) and our client behind NAT 1 reach each
other, both directions; with `UpnpSymmetricNat off` on cli2, the same lab fails, as the
interop matrix's `symmetric` row does without an IGD.  The mapping is visible in miniupnpd
(`upnpc -l`) while cli2 runs and gone after it stopped.  docs/protocol.md §13.8.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from teredolab import igd as lab_igd
from teredolab.topology import NetnsLab
from tests.kernel.harness import (
    OURS,
    Daemon,
    Stack,
    client_conf,
    engine_status,
    ping,
    start_client,
    start_relay,
    start_server,
    wait_for,
    wait_for_teredo_address,
    write_conf,
)
from tests.kernel.harness import Client as StackClient

pytestmark = pytest.mark.kernel


def _listing(lab: NetnsLab, igd: lab_igd.Igd) -> str:
    url = f"http://{lab.spec.nat2_lan}:{igd.http_port}/rootDesc.xml"
    return lab.exec("cli2", ["upnpc", "-u", url, "-l"], timeout=20).stdout


def _start_cli2(stack: Stack, upnp: bool) -> StackClient:
    spec = stack.lab.spec
    text = client_conf(spec) + ("" if upnp else "UpnpSymmetricNat off\n")
    conf = write_conf(stack.run_dir / "cli2.conf", text)
    d = Daemon(stack.lab, "cli2", "client", conf, stack.run_dir, OURS)
    stack.daemons.append(d.start())
    addr, secs = wait_for_teredo_address(stack.lab, "cli2", spec.teredo_if, 20,
                                         since=d.started_at, daemon=d)
    stack.clients["cli2"] = c = StackClient(d, addr, secs)
    return c


def _run(lab: NetnsLab, run_dir: Path, igd: lab_igd.Igd, upnp: bool) -> tuple[Stack, dict]:
    stack = Stack(lab, run_dir)
    start_server(stack, OURS)
    start_relay(stack, OURS)
    start_client(stack, "cli", OURS)
    cli2 = _start_cli2(stack, upnp)

    def upnp_settled() -> dict | None:
        st = engine_status(cli2.daemon.status_socket)
        up = st.get("rfc6081", {}).get("upnp")
        if not upnp:
            return st
        return st if up and up.get("mapping") and up.get("advertised") else None

    try:
        st = wait_for(upnp_settled, "cli2's status to show an advertised UPnP mapping", 30)
    except AssertionError as e:
        st = engine_status(cli2.daemon.status_socket)
        raise AssertionError(f"{e}: rfc6081 {st.get('rfc6081')}\n{stack.logs()}\n"
                             f"{igd.log.read_text()[-3000:]}") from None
    return stack, st


def test_ours_behind_a_upnp_symmetric_nat_reaches_ours(lab_factory, run_dir: Path,
                                                       tmp_path: Path) -> None:
    lab = lab_factory(nat2_type="symmetric-upnp")
    igd = lab_igd.start(lab, tmp_path / "igd")
    stack = None
    try:
        stack, st = _run(lab, run_dir, igd, upnp=True)
        up = st["rfc6081"]["upnp"]
        port = up["mapping"]["port"]
        assert up["mapping"]["ip"] == lab.spec.nat2_wan and up["mapping"]["lease"] > 0
        assert st["rfc6081"]["nat"] == "symmetric"
        assert port != st["mapped"]["port"]  # the server sees another, random port
        assert f"UDP {port}->{lab.spec.cli2_ip}:{port}" in _listing(lab, igd)
        a, b = stack.clients["cli"].address, stack.clients["cli2"].address
        there = ping(lab, "cli", b, count=8, interval=0.5, wait=4)
        back = ping(lab, "cli2", a, count=8, interval=0.5, wait=4)
        print(f"\nUPnP {lab.spec.nat2_wan}:{port}: cli -> cli2 {there.summary()}, "
              f"cli2 -> cli {back.summary()}")
        assert there.received > 0, f"cli -> cli2: {there.summary()}\n{stack.logs()}"
        assert back.received > 0, f"cli2 -> cli: {back.summary()}\n{stack.logs()}"
        st = engine_status(stack.clients["cli2"].daemon.status_socket)
        assert st["rfc6081"]["used"].get("upnp_symmetric_nat") == 1, st["rfc6081"]
        # shutdown gives the mapping back
        assert stack.clients["cli2"].daemon.stop() == 0
        assert f"UDP {port}->" not in _listing(lab, igd)
    finally:
        if stack is not None:
            stack.stop()
        igd.stop()


def test_without_upnp_the_same_lab_fails(lab_factory, run_dir: Path, tmp_path: Path) -> None:
    lab = lab_factory(nat2_type="symmetric-upnp")
    igd = lab_igd.start(lab, tmp_path / "igd")
    stack = None
    try:
        stack, st = _run(lab, run_dir, igd, upnp=False)
        assert st["rfc6081"]["upnp"] is None
        assert "UDP" not in _listing(lab, igd).split("leaseTime", 1)[-1]
        a, b = stack.clients["cli"].address, stack.clients["cli2"].address
        assert ping(lab, "cli", b, count=4, interval=0.5, wait=3).received == 0
        assert ping(lab, "cli2", a, count=4, interval=0.5, wait=3).received == 0
    finally:
        if stack is not None:
            stack.stop()
        igd.stop()
