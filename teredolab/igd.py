"""A real UPnP IGD in the lab: Debian's miniupnpd in a NAT namespace (`symmetric-upnp`).

miniupnpd listens on the NAT's LAN side (`lan`) with `wan` as its external interface and
writes its port mappings into the chains `nat_ruleset("symmetric-upnp", ...)` created.  It
refuses to forward ports while its WAN address is in a reserved range (every lab address is,
documentation ranges only) unless a STUN test finds nothing in front of it, so a STUN
responder (teredolab.stun) runs in the server namespace for it.  Both run from a config file
in a directory the caller owns, and are stopped by PID (`stop`); `NetnsLab.down()` also stops
anything left in the namespaces.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from teredolab.topology import LabError, NetnsLab

STUN_PORT = 3478
MINIUPNPD = "/usr/sbin/miniupnpd"


@dataclass
class Igd:
    """The running IGD of one lab NAT: its processes and where its files are."""

    daemon: subprocess.Popen
    stun: subprocess.Popen
    log: Path
    http_port: int

    def stop(self) -> None:
        """SIGTERM both (miniupnpd removes its mappings on the way out), SIGKILL if stuck."""
        for proc in (self.daemon, self.stun):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def config_text(lan_net: str, stun_host: str) -> str:
    """miniupnpd.conf: UPnP IGD only (no NAT-PMP/PCP), mappings only for the NAT's own LAN
    and only to the asking host (secure_mode), external ports 1024-65535."""
    return "\n".join([
        "ext_ifname=wan", "listening_ip=lan", "port=0",
        "enable_natpmp=no", "enable_upnp=yes", "secure_mode=yes", "system_uptime=yes",
        "uuid=00000000-0000-4000-8000-0000000006f1",
        "ext_perform_stun=yes", f"ext_stun_host={stun_host}", f"ext_stun_port={STUN_PORT}",
        f"allow 1024-65535 {lan_net} 1024-65535",
        "deny 0-65535 0.0.0.0/0 0-65535", ""])


def start(lab: NetnsLab, workdir: Path, nat: str = "nat2", timeout: float = 15.0) -> Igd:
    """Start the STUN responder and miniupnpd for `nat` (of kind `symmetric-upnp`); return
    once miniupnpd's HTTP port is known and its STUN test enabled port forwarding."""
    s = lab.spec
    lan_ip = s.nat2_lan if nat == "nat2" else s.nat_lan
    lan_net = f"{lan_ip.rsplit('.', 1)[0]}.0/{s.lan_plen}"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "miniupnpd.conf"
    conf.write_text(config_text(lan_net, s.srv_ip1))
    log = workdir / "miniupnpd.log"
    stun = lab.spawn("srv", [sys.executable, "-m", "teredolab.stun", s.srv_ip1, str(STUN_PORT)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("wb") as out:
        daemon = lab.spawn(nat, [MINIUPNPD, "-f", str(conf), "-d", "-P",
                                 str(workdir / "miniupnpd.pid")],
                           stdout=out, stderr=subprocess.STDOUT)
    igd = Igd(daemon, stun, log, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        port = re.search(r"HTTP listening on port (\d+)", text)
        if port and "firewall does not block incoming" in text:
            igd.http_port = int(port.group(1))
            return igd
        if daemon.poll() is not None:
            break
        time.sleep(0.1)
    igd.stop()
    raise LabError(f"lab {s.prefix}: miniupnpd in {nat} did not come up:\n"
                   + log.read_text(errors="replace")[-2000:])
