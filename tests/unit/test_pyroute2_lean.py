"""engine.runtime.pyroute2_lean: the engine loads pyroute2's rtnetlink parts only, and the
package still answers any public name the documented way.  Each case runs in a fresh
interpreter, since the point is what gets imported."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import engine.runtime.netlink
lean = sorted(m for m in sys.modules if m.startswith("pyroute2"))
import pyroute2
names = {"IPRoute": pyroute2.IPRoute.__module__, "NDB": pyroute2.NDB.__name__,
         "version": pyroute2.__version__}
from pyroute2 import config
full = sorted(m for m in sys.modules if m.startswith("pyroute2"))
print(json.dumps({"lean": lean, "full": full, "names": names, "config": config.__name__}))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_netlink_does_not_run_the_package_init():
    got = probe()
    lean = set(got["lean"])
    assert "pyroute2.iproute.linux" in lean
    # families the engine never uses stay unloaded until someone asks the package for them
    for heavy in ("pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.conntrack", "pyroute2.ipset"):
        assert heavy not in lean, heavy
    assert len(lean) < len(got["full"])


def test_the_package_still_answers_every_public_name():
    got = probe()
    assert got["names"]["IPRoute"] == "pyroute2.iproute.linux"
    assert got["names"]["NDB"] == "NDB"
    assert got["config"] == "pyroute2.config"
    assert "pyroute2.ndb.main" in got["full"]
