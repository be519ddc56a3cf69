"""Orphans across hosts: each host keeps the instances the inventory no longer has, the
controller says so in one warning line, and `up --remove-orphans` makes every host remove its
own (three sshd hosts in namespaces, as tests/kernel/test_remote_fleet.py builds them)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.kernel.test_remote_fleet import GIT_ENV, Fleet, relay, three_hosts

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def hosts_fleet() -> Iterator[Fleet]:
    yield from three_hosts()


def test_orphans_on_a_host_are_kept_then_removed(hosts_fleet: Fleet) -> None:
    f = hosts_fleet
    host3 = f.hosts[2].name
    # a second relay on host3, so host3 keeps an instance after this one leaves
    f.commit({"r4.yaml": relay(host3, "interface: teredo4\n")}, "a second relay on host3")
    rc, doc = f.json("up")
    assert rc == 0, doc
    assert ("r4", "started") in {(r["name"], r["action"]) for r in doc["results"]}

    subprocess.run(["git", "rm", "-q", "r4.yaml"], cwd=f.root, check=True)
    subprocess.run(["git", "commit", "-qm", "r4 leaves"], cwd=f.root, check=True,
                   env={**os.environ, **GIT_ENV})
    proc = f.miredoctl("up", "--json")
    assert proc.returncode == 0, proc.stderr
    got = {(r["host"], r["name"]): r["action"] for r in json.loads(proc.stdout)["results"]}
    assert got[(host3, "r4")] == "orphan kept"
    assert (f"miredoctl: warning: 1 orphan(s) run but are not in the inventory: {host3}/r4 "
            "(left running; `--remove-orphans` stops and removes them)") in proc.stderr
    rc, st = f.json("status")
    assert {r["name"]: r["state"] for r in st["instances"]}["r4"] == "RUNNING"

    proc = f.miredoctl("up", "r1", "--remove-orphans")
    assert proc.returncode == 2 and "--remove-orphans goes with" in proc.stderr
    rc, doc = f.json("up", "--remove-orphans")
    assert rc == 0, doc
    got = {(r["host"], r["name"]): r["action"] for r in doc["results"]}
    assert got[(host3, "r4")] == "removed"
    rc, st = f.json("status")
    assert "r4" not in {r["name"] for r in st["instances"]}
