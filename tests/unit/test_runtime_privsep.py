"""Pure pieces of privilege handling and logging set-up."""

from __future__ import annotations

import pwd
import syslog

import pytest

from engine.runtime.logsetup import facility_number
from engine.runtime.privsep import PrivsepError, cap_eff, resolve_user, status_field

STATUS = """Name:\tpython
Uid:\t65534\t65534\t65534\t65534
Gid:\t65534\t65534\t65534\t65534
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000003000
"""


def test_cap_eff_and_fields():
    assert cap_eff(STATUS) == 0x3000
    assert status_field(STATUS, "Uid") == ["65534"] * 4
    with pytest.raises(PrivsepError):
        cap_eff("Name: x\n")


def test_resolve_user():
    nobody = pwd.getpwnam("nobody")
    acc = resolve_user("nobody")
    assert (acc.uid, acc.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert resolve_user(str(nobody.pw_uid)).name == "nobody"
    with pytest.raises(PrivsepError, match="uid 0"):
        resolve_user("root")
    with pytest.raises(PrivsepError, match="unknown user 'no-such-user-h6'"):
        resolve_user("no-such-user-h6")


def test_facilities():
    assert facility_number("LOCAL3") == syslog.LOG_LOCAL3
    assert facility_number(None) == syslog.LOG_DAEMON
    assert facility_number("daemon") == syslog.LOG_DAEMON
