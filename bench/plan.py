"""The lab's address plan as the benchmark needs it.

The values are the lab's documented defaults (documentation and benchmark ranges only, never
configured in the root namespace). They live in one frozen object so that the topology, the
daemon configs and the traffic generators cannot disagree about an address.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AddressPlan:
    """Addresses and names of the lab roles the benchmark uses (srv, rly, v6, nat, cli)."""

    srv_ip1: str = "203.0.113.10"
    srv_ip2: str = "203.0.113.11"  # miredo-server wants primary + 1
    rly_ip4: str = "203.0.113.20"
    rly_port: int = 3545
    nat_wan: str = "198.51.100.1"
    nat_lan: str = "198.18.0.1"
    cli_ip: str = "198.18.0.2"
    lan_plen: int = 24
    pub4_plen: int = 24
    srv_ip6: str = "2001:db8:1::10"
    rly_ip6: str = "2001:db8:1::20"
    v6_host: str = "2001:db8:1::100"
    v6_plen: int = 64
    teredo_prefix: str = "2001:0::"
    teredo_if: str = "teredo"


PLAN = AddressPlan()
