"""The engine's netlink path end to end: a client's parent forks its worker before importing
pyroute2, so local discovery's interfaces reach the worker as a host fact after the fork; a
respawned worker (forked once pyroute2 is loaded) gets them at once and still configures the
interface.

Two private namespaces joined by a veth pair: our server in one (198.51.100.10/.11), our
client in the other (198.51.100.20, `LocalDiscovery forced` since documentation addresses
count as global), each on a unique name, removed even on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime.status_server import query
from teredolab import netns
from tests.kernel.conftest import unique_prefix
from tests.kernel.harness import venv_python, wait_for

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]
PY = venv_python()  # the venv of this checkout, or the running interpreter (a worktree)
if not os.path.exists(PY):
    PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def pair():
    if os.geteuid() != 0:
        pytest.skip("kernel test: needs root")
    prefix = unique_prefix()
    srv, cli = prefix + "nlsrv", prefix + "nlcli"
    made = []
    try:
        for name in (srv, cli):
            netns.add(name)
            made.append(name)
        subprocess.run(["ip", "link", "add", "v0", "netns", srv, "type", "veth", "peer", "name",
                        "v1", "netns", cli], check=True)
        ip(srv, "addr", "add", "198.51.100.10/24", "dev", "v0")
        ip(srv, "addr", "add", "198.51.100.11/24", "dev", "v0")
        ip(cli, "addr", "add", "198.51.100.20/24", "dev", "v1")
        ip(srv, "link", "set", "v0", "up")
        ip(cli, "link", "set", "v1", "up")
        # carrier first: a link coming up under a running client is a re-qualification (and
        # a kick brings a fresh discovery list too, which would hide a missing late one)
        for name, dev in ((srv, "v0"), (cli, "v1")):
            wait_for(lambda n=name, d=dev: "LOWER_UP" in ip(n, "link", "show", "dev", d),
                     f"carrier on {dev}")
        yield srv, cli
    finally:
        for name in made:  # stops (by PID) whatever still runs in them
            netns.delete(name)


class Engine:
    def __init__(self, ns: str, d: Path, name: str, conf: str) -> None:
        self.conf = d / f"{name}.conf"
        self.conf.write_text(conf)
        self.sock = str(d / f"{name}.sock")
        self.log = d / f"{name}.log"
        argv = ["ip", "netns", "exec", ns, PY, "-m", "engine", "-f", "-c", str(self.conf),
                "-p", str(d / f"{name}.pid"), "--status-socket", self.sock]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV)

    def status(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"engine exited {self.proc.returncode}: {self.text()}")
        try:
            return query(self.sock)
        except (OSError, ValueError):
            return None

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


CLIENT_CONF = ("RelayType client\nServerAddress 198.51.100.10\nInterfaceName h6nl\n"
               "LocalDiscovery forced\n")


def _teredo_address(ns: str) -> str | None:
    for line in ip(ns, "-6", "-o", "addr", "show", "dev", "h6nl", "scope", "global").splitlines():
        return line.split()[3].split("/")[0]
    return None


def test_client_discovery_facts_and_respawn(pair, tmp_path):
    srv_ns, cli_ns = pair
    srv = Engine(srv_ns, tmp_path, "srv",
                 "ServerBindAddress 198.51.100.10\nServerBindAddress2 198.51.100.11\n")
    cli = None
    try:
        wait_for(lambda: (s := srv.status()) and s.get("worker_pid"), "server")
        cli = Engine(cli_ns, tmp_path, "cli", CLIENT_CONF)

        def qualified_with_discovery():
            s = cli.status()
            return (s and s.get("state") == "qualified"
                    and s.get("discovery", {}).get("interfaces") == ["v1"] and s)

        st = wait_for(qualified_with_discovery, "qualified client with discovery on v1")
        assert "host network changed" not in cli.text()  # the list came as a host fact
        addr = wait_for(lambda: _teredo_address(cli_ns), "Teredo address on h6nl")
        assert addr == st["address"]
        worker = st["worker_pid"]
        # the worker joined the discovery group on v1 itself, when the fact arrived
        groups = subprocess.run(["ip", "netns", "exec", cli_ns, "cat", "/proc/net/igmp"],
                                capture_output=True, text=True, check=True).stdout
        assert "FD0000E0" in groups.upper()  # 224.0.0.253, little-endian hex

        # a crashed worker is respawned by a parent that has pyroute2 loaded by now: the
        # discovery list is known before the fork, and the new worker configures the link
        os.kill(worker, signal.SIGKILL)

        def respawned():
            s = cli.status()
            return (s and s.get("worker_pid") not in (None, worker)
                    and s.get("state") == "qualified" and s)

        st2 = wait_for(respawned, "respawned and re-qualified worker")
        assert st2["discovery"]["interfaces"] == ["v1"]
        assert wait_for(lambda: _teredo_address(cli_ns), "address after respawn") == (
            st2["address"])
        assert "host facts:" not in cli.text()  # no fact was refused
        assert cli.stop() == 0
        assert "h6nl" not in ip(cli_ns, "link", "show")
    finally:
        if cli is not None:
            cli.stop()
        srv.stop()
