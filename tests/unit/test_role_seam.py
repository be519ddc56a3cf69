"""The seam between the roles and the worker: the `Role` protocol, and the `peers` command."""

from __future__ import annotations

import ast
import inspect
import socket
import time
from pathlib import Path

import pytest

from engine.proto.addr import build_teredo, ipv6_text
from engine.proto.client import ClientRole
from engine.proto.qualify import TRANSITIONS, Phase, Qualifier
from engine.proto.relay import RelayRole
from engine.proto.role_protocol import Role
from engine.proto.server import ServerRole
from engine.proto.tunnel import TeredoTunnel
from engine.runtime import worker
from engine.runtime.worker import Worker, WorkerResources

SERVER = "203.0.113.10"


def _roles() -> list[object]:
    return [
        ClientRole(server=SERVER, ping_ident=1, token_bytes=bytes),
        RelayRole(relay_type="cone", token_bytes=bytes),
        ServerRole(SERVER),
    ]


@pytest.mark.parametrize("role", _roles(), ids=["client", "relay", "server"])
def test_every_role_is_a_role(role):
    assert isinstance(role, Role)


def _protocol_members() -> set[str]:
    return {
        name for name in vars(Role)
        if not name.startswith("_") and name not in ("register",)
    } | set(Role.__annotations__)


def _role_attributes_used(module) -> set[str]:
    """`x.role.NAME` / `role.NAME` attribute reads in a runtime module's source."""
    tree = ast.parse(inspect.getsource(module))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "role") or (
                isinstance(owner, ast.Name) and owner.id == "role"
            ):
                used.add(node.attr)
    return used


def test_the_worker_calls_roles_only_through_the_protocol():
    used = _role_attributes_used(worker)
    assert used, "the scan found no role calls at all"
    assert used <= _protocol_members(), used - _protocol_members()
    source = inspect.getsource(worker)
    assert "getattr(self.role" not in source and "hasattr(role" not in source


def test_hostfacts_needs_are_in_the_protocol():
    """What the host-facts handler needs from a role is declared, so it need not probe."""
    assert {"set_icmp_sources", "restart_discovery", "set_discovery_interfaces"} <= (
        _protocol_members()
    )


def test_tunnel_has_no_role_flag():
    params = inspect.signature(TeredoTunnel.__init__).parameters
    assert "is_client" not in params
    assert not hasattr(RelayRole(token_bytes=bytes), "is_client")


def test_client_takes_its_ping_identifier_from_the_caller():
    c = ClientRole(server=SERVER, ping_ident=0x1234, token_bytes=bytes)
    assert c.ping.ident == 0x1234
    src = Path(inspect.getfile(ClientRole)).read_text()
    assert "import os" not in src


# -- the peers command -------------------------------------------------------------------------

def _peer(i: int) -> bytes:
    return build_teredo(0x20010000, SERVER, 0, 40000 + i, f"198.51.100.{i + 1}")


def _relay_with_peers(now: float) -> RelayRole:
    relay = RelayRole(relay_type="cone", token_bytes=bytes, now=now)
    t = relay.peers.tick(now)
    reachable = relay.peers.create(_peer(0), ("198.51.100.1", 40000), t)
    reachable.trusted = True
    stale = relay.peers.create(_peer(1), ("198.51.100.2", 40001), t - 100)
    stale.trusted = True
    pending = relay.peers.create(_peer(2), ("198.51.100.3", 40002), t)
    assert pending.enqueue(b"x" * 100, None)
    return relay


def test_list_peers_rows():
    relay = _relay_with_peers(1000.5)
    listing = relay.list_peers(1000.5, 10)
    assert (listing["count"], listing["trusted"], listing["truncated"]) == (3, 2, False)
    rows = {row["address"]: row for row in listing["peers"]}
    first = rows[ipv6_text(_peer(0))]
    assert first == {
        "address": ipv6_text(_peer(0)),
        "mapping": {"ip": "198.51.100.1", "port": 40000},
        "state": "reachable",
        "trusted": True,
        "local": False,
        "last_rx": 1000,
        "last_tx": 1000,
        "queued": 0,
        "queued_bytes": 0,
        "bubbles": 0,
        "pings": 0,
    }
    states = sorted(row["state"] for row in listing["peers"])
    assert states == ["pending", "reachable", "stale"]
    pending = next(r for r in listing["peers"] if r["state"] == "pending")
    assert (pending["queued"], pending["queued_bytes"], pending["trusted"]) == (1, 100, False)


def test_list_peers_is_bounded():
    relay = _relay_with_peers(1000.5)
    listing = relay.list_peers(1000.5, 2)
    assert len(listing["peers"]) == 2 and listing["truncated"] and listing["count"] == 3


def test_a_native_peer_has_no_mapping():
    client = ClientRole(server=SERVER, ping_ident=1, token_bytes=bytes)
    client.peers.create(bytes.fromhex("20010db8" + "00" * 11 + "01"), ("0.0.0.0", 0), 5)
    (row,) = client.list_peers(5.0, 10)["peers"]
    assert row["mapping"] is None and row["state"] == "pending"


def test_server_lists_no_peers():
    assert ServerRole(SERVER).list_peers(1.0, 10) == {
        "count": 0, "trusted": 0, "truncated": False, "peers": []
    }


def test_worker_peers_answer_is_wall_clock():
    mono = 1000.5
    relay = _relay_with_peers(mono)
    parent, child = socket.socketpair()
    try:
        w = Worker(None, relay, WorkerResources(udp=[], control=child),  # type: ignore[arg-type]
                   clock=lambda: mono)
        answer = w.answer("peers")
        w.close()
    finally:
        parent.close()
        child.close()
    assert answer is not None and answer["count"] == 3
    now = time.time()
    for row in answer["peers"]:
        assert now - 200 < row["last_rx"] <= now + 1
        assert isinstance(row["address"], str)


# -- qualification as one state -----------------------------------------------------------------

def test_every_phase_has_moves_and_a_status_word():
    assert set(TRANSITIONS) == set(Phase)
    assert {p.word for p in Phase} == {
        "starting", "qualifying", "qualified", "lost", "backoff"
    }
    assert Phase.REFRESHING.word == "qualified" and Phase.REFRESHING.up
    assert not Phase.LOST.up and Phase.LOST.soliciting and not Phase.BACKOFF.soliciting


def test_a_move_outside_the_table_is_a_bug():
    q = Qualifier(SERVER, now=0.0, token_bytes=bytes, randbits=lambda n: 0)
    assert q.phase is Phase.STARTING and q.state == "starting" and not q.up
    with pytest.raises(AssertionError, match="STARTING to QUALIFIED"):
        q._enter(Phase.QUALIFIED, "")


def test_timer_follows_the_phase():
    q = Qualifier(SERVER, now=0.0, token_bytes=lambda n: b"\x01" * n, randbits=lambda n: 0)
    assert q.next_timer() == 0.0
    q.handle_timer(0.0)
    assert q.phase is Phase.QUALIFYING and q.outstanding_nonce == b"\x01" * 8
    assert q.next_timer() == 4.0
    for now in (4.0, 8.0, 12.0):
        q.handle_timer(now)
    assert q.phase is Phase.BACKOFF and q.outstanding_nonce is None
    assert q.next_timer() == 8.0 + 100.0
