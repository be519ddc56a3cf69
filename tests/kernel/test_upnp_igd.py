"""engine.runtime.upnp against a real IGD: Debian's miniupnpd in the lab's `symmetric-upnp` NAT 2.

cli2's UDP port 40000 is mapped through SSDP discovery, the device description and SOAP
(GetExternalIPAddress, AddPortMapping); the mapping must show in miniupnpd's own listing
(`upnpc -l`) and in its nftables chain, and make cli2:40000 reachable from cli (behind NAT 1)
at NAT 2's address, which the symmetric NAT otherwise drops; DeletePortMapping must remove
it again.  docs/protocol.md §13.8.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from teredolab import igd as lab_igd
from teredolab.topology import NetnsLab

pytestmark = pytest.mark.kernel

PORT = 40000
RECEIVE = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "s.settimeout(float(sys.argv[3]))\n"
    "print('ready', flush=True)\n"
    "try:\n"
    "    data, peer = s.recvfrom(100)\n"
    "    s.sendto(b'reply', peer)\n"
    "    print(data.decode(), flush=True)\n"
    "except TimeoutError:\n"
    "    print('nothing', flush=True)\n"
)
SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(0.2)\n"
    "for _ in range(10):\n"
    "    s.sendto(b'hello-upnp', (sys.argv[1], int(sys.argv[2])))\n"
    "    try:\n"
    "        data, src = s.recvfrom(100)\n"
    "    except TimeoutError:\n"
    "        continue\n"
    "    print(f'{data.decode()} from {src[0]}:{src[1]}', flush=True)\n"
    "    break\n"
)


def _reaches_cli2(lab: NetnsLab) -> bool:
    """Whether UDP from cli to NAT 2's WAN address, port PORT, arrives at cli2:PORT; when it
    does, cli2's answer must come back from that same address and port (the IGD's mapping,
    not a port the symmetric NAT picks)."""
    recv = lab.spawn("cli2", [sys.executable, "-c", RECEIVE, lab.spec.cli2_ip, str(PORT), "3"],
                     stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        sent = lab.exec("cli", [sys.executable, "-c", SEND, lab.spec.nat2_wan, str(PORT)],
                        check=True, timeout=30)
        out, _ = recv.communicate(timeout=10)
        if out.strip() != "hello-upnp":
            assert sent.stdout == "", sent.stdout
            return False
        assert sent.stdout.strip() == f"reply from {lab.spec.nat2_wan}:{PORT}"
        return True
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()


def _upnpc_list(lab: NetnsLab, igd: lab_igd.Igd) -> str:
    url = f"http://{lab.spec.nat2_lan}:{igd.http_port}/rootDesc.xml"
    return lab.exec("cli2", ["upnpc", "-u", url, "-l"], timeout=20).stdout


def _upnp(lab: NetnsLab, *args: str) -> subprocess.CompletedProcess:
    return lab.exec("cli2", [sys.executable, "-m", "engine.runtime.upnp", *args], timeout=30,
                    cwd=str(Path(__file__).resolve().parents[2]))


def test_mapping_through_miniupnpd(lab_factory, tmp_path: Path) -> None:
    lab = lab_factory(nat2_type="symmetric-upnp")
    igd = lab_igd.start(lab, tmp_path / "igd")
    try:
        mapping = f"{lab.spec.nat2_wan}:{PORT} -> {lab.spec.cli2_ip}:{PORT}"
        assert not _reaches_cli2(lab), "the symmetric NAT let an unsolicited packet in"

        r = _upnp(lab, "show", lab.spec.cli2_ip)
        assert r.returncode == 0, r.stderr + igd.log.read_text()
        shown = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        assert shown["external"] == lab.spec.nat2_wan and shown["lan"] == lab.spec.cli2_ip
        assert shown["igd"] == f"http://{lab.spec.nat2_lan}:{igd.http_port}/rootDesc.xml"
        assert shown["service"].startswith("urn:schemas-upnp-org:service:WANIPConnection:")

        r = _upnp(lab, "map", lab.spec.cli2_ip, str(PORT), "600")
        assert r.returncode == 0, r.stderr + igd.log.read_text()
        assert r.stdout.strip() == f"{mapping} lease 600"
        listed = _upnpc_list(lab, igd)
        assert f"UDP {PORT}->{lab.spec.cli2_ip}:{PORT}" in listed, listed
        chain = lab.exec("nat2", ["nft", "list", "chain", "inet", "filter",
                                  "prerouting_miniupnpd"]).stdout
        assert f"dnat ip to {lab.spec.cli2_ip}:{PORT}" in chain, chain
        assert _reaches_cli2(lab), "the UPnP mapping did not let cli reach cli2"

        r = _upnp(lab, "unmap", lab.spec.cli2_ip, str(PORT))
        assert r.returncode == 0, r.stderr
        listed = _upnpc_list(lab, igd)
        assert f"UDP {PORT}->" not in listed, listed
        chain = lab.exec("nat2", ["nft", "list", "chain", "inet", "filter",
                                  "prerouting_miniupnpd"]).stdout
        assert "dnat" not in chain, chain
    finally:
        igd.stop()
    assert igd.daemon.returncode is not None and igd.stun.returncode is not None


def test_no_igd_is_a_clear_error(lab_factory) -> None:
    """Behind the plain symmetric NAT nobody answers the search: exit 1, one line, no hang."""
    lab = lab_factory(nat2_type="symmetric")
    r = lab.exec("cli2", [sys.executable, "-m", "engine.runtime.upnp", "map",
                          lab.spec.cli2_ip, str(PORT), "600"], timeout=30,
                 cwd=str(Path(__file__).resolve().parents[2]))
    assert r.returncode == 1
    assert r.stderr.strip() == f"upnp: SSDP search from {lab.spec.cli2_ip}: no IGD answered"
