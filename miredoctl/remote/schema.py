"""What the per-host agent answers and how the controller judges it: shared by both ends.

The agent's answer is one JSON document (the envelope) carrying `schema`; a controller refuses
an answer of another schema rather than misread it, and refuses a host whose teredo-fleet
differs from its own (version and a fingerprint of the code, so two editable installs of the
same version number with different code are told apart).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

SCHEMA = 1
EXIT_UNREACHABLE = 5  # some selected host could not be reached (its instances: UNREACHABLE)
EXIT_VERSION = 10  # agent: this host's teredo-fleet is not the controller's
DIST = "teredo-fleet"
_PACKAGES = ("miredoctl", "engine")


def version() -> str:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def fingerprint() -> str:
    """sha256 (16 hex) over the code that runs on a host: the manager, its template and the
    engine. The version string alone cannot tell a changed editable install from the release."""
    h = hashlib.sha256()
    top = Path(__file__).resolve().parents[2]
    for package in _PACKAGES:
        base = top / package
        for path in sorted(p for p in base.rglob("*") if p.suffix in (".py", ".j2")
                           and "__pycache__" not in p.parts):
            h.update(str(path.relative_to(top)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def identity() -> str:
    return f"{version()}+{fingerprint()}"


def install_id() -> str:
    """This machine and this very install (the package folder's path, device and inode): a
    host on the controller's own filesystem runs the controller's files, even while they are
    being edited, so comparing fingerprints taken a second apart would be a false alarm."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = "?"
    pkg = Path(__file__).resolve().parents[1]
    st = pkg.stat()
    return f"{machine}:{pkg}:{st.st_dev}:{st.st_ino}"
