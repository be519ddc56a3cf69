"""A fleet across hosts: `hosts bootstrap` and the version match, on real sshd namespace hosts.

The namespace hosts share this machine's filesystem (tests/kernel/sshhosts.py), so the Debian
packages bootstrap wants are already there: what is checked is that bootstrap finds them, makes
the folders and miredoctl's own venv, installs the controller's teredo-fleet from the shipped
wheels (no package index: the hosts have no route out), and that a second run changes nothing.
Then a host whose teredo-fleet is older than the controller's is upgraded by the next command.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from miredoctl.remote import schema
from tests.kernel.test_remote_fleet import Fleet, by_host, three_hosts

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    yield from three_hosts()


def _host_python(fleet: Fleet, index: int) -> Path:
    return fleet.hosts[index].root / "agent" / "venv" / "bin" / "python"


def _own_venv(fleet: Fleet, index: int) -> str:
    """hosts.yaml with host `index` on miredoctl's own venv (under its miredoctl_root)."""
    text = (fleet.root / "hosts.yaml").read_text()
    h = fleet.hosts[index]
    return text.replace(f"      ansible_host: {h.address}\n",
                        f"      ansible_host: {h.address}\n"
                        f"      miredoctl_python: {_host_python(fleet, index)}\n")


def _installed_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "from miredoctl.remote import schema; "
                           "print(schema.identity())"], capture_output=True, text=True,
                          check=True, timeout=60, cwd="/").stdout.strip()  # not this checkout


def test_bootstrap_is_idempotent_and_an_older_host_is_upgraded(fleet: Fleet) -> None:
    plain = (fleet.root / "hosts.yaml").read_text()
    fleet.commit({"hosts.yaml": _own_venv(fleet, 2)}, "host3 on miredoctl's own venv")
    python = _host_python(fleet, 2)
    try:
        assert not python.exists()
        # before bootstrap, host3 has no teredo-fleet at all: a command installs it first
        rc, doc = fleet.json("hosts", "bootstrap", "host3")
        assert rc == 0, doc
        (h3,) = doc["hosts"]
        assert h3["host"] == "host3" and h3["outcome"] == "changed", doc
        steps = "\n".join(h3["steps"])
        assert "packages present" in steps and "created venv" in steps, steps
        # (compared with what the host has, not with this process's identity: in a working
        # tree being edited, the code's fingerprint moves between two reads)
        assert f"-> {_installed_version(python)}" in steps, steps
        assert _installed_version(python).startswith(schema.version() + "+")

        # every host, twice: the second run finds everything in place and changes nothing
        rc, doc = fleet.json("hosts", "bootstrap")
        assert rc == 0, doc
        rc, doc = fleet.json("hosts", "bootstrap")
        assert rc == 0, doc
        assert {h["host"]: h["outcome"] for h in doc["hosts"]} == {
            "host1": "unchanged", "host2": "unchanged", "host3": "unchanged"}, doc
        text = fleet.miredoctl("hosts", "bootstrap", "host3")
        assert text.returncode == 0 and text.stdout.startswith("host3: unchanged"), text.stdout

        # host3's teredo-fleet becomes an older release: the next command upgrades it first
        meta = next(python.parents[1].glob("lib/python3*/site-packages/teredo_fleet-*"
                                           ".dist-info/METADATA"))
        meta.write_text(meta.read_text().replace(f"Version: {schema.version()}\n",
                                                 "Version: 0.0.1\n", 1))
        assert _installed_version(python).startswith("0.0.1+")
        rc, doc = fleet.json("up")  # rolling, host3 last: hosts 1 and 2 are not run twice
        assert rc == 0, doc
        hosts = by_host(doc)
        assert hosts["host3"]["outcome"] == "done" and hosts["host3"]["upgraded"], hosts
        assert not hosts["host1"]["upgraded"] and not hosts["host2"]["upgraded"]
        assert [(r["host"], r["action"]) for r in doc["results"]] == [
            ("host1", "started"), ("host2", "started"), ("host3", "started")], doc
        rc, st = fleet.json("status")
        assert rc == 0 and {r["state"] for r in st["instances"]} == {"RUNNING"}, st
        assert not any(h["upgraded"] for h in st["hosts"]), st
        # the same through a read-only command (plain ssh; the upgrade goes through ansible)
        meta.write_text(meta.read_text().replace(f"Version: {schema.version()}\n",
                                                 "Version: 0.0.1\n", 1))
        rc, st = fleet.json("status")
        assert rc == 0 and by_host(st)["host3"]["upgraded"], st
        assert {r["state"] for r in st["instances"]} == {"RUNNING"}, st
        assert _installed_version(python).startswith(schema.version() + "+")
        rc, doc = fleet.json("hosts", "--host", "host3")
        assert rc == 0 and doc["hosts"][0]["version"] == _installed_version(python), doc
    finally:
        fleet.commit({"hosts.yaml": plain}, "host3 back to this machine's teredo-fleet")


def test_a_host_on_the_operators_own_python_is_refused_not_upgraded(fleet: Fleet) -> None:
    """A miredoctl_python outside miredoctl_root is the operator's: an older teredo-fleet
    there is refused with what to do, and nothing is installed into it."""
    other = fleet.ssh.base / "operator-venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(other)], check=True, timeout=120)
    plain = (fleet.root / "hosts.yaml").read_text()
    h2 = fleet.hosts[1]
    fleet.commit({"hosts.yaml": plain.replace(
        f"      ansible_host: {h2.address}\n",
        f"      ansible_host: {h2.address}\n      miredoctl_python: {other}/bin/python\n")},
        "host2 on the operator's own Python")
    try:
        rc, st = fleet.json("status")
        detail = by_host(st)["host2"]["detail"]
        assert by_host(st)["host2"]["outcome"] == "failed", st
        assert "not upgraded" in detail and "not miredoctl's own venv" in detail, detail
        assert not list(other.glob("lib/python3*/site-packages/miredoctl")), "installed into it"
        rc, doc = fleet.json("hosts", "bootstrap", "host2")
        assert rc == 1 and doc["hosts"][0]["outcome"] == "failed", json.dumps(doc)
        assert "install teredo-fleet there yourself" in doc["hosts"][0]["detail"], doc
    finally:
        fleet.commit({"hosts.yaml": plain}, "host2 back")
