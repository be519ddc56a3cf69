"""The controller's own teredo-fleet, as wheels a host can install without any package index.

A host must run the very teredo-fleet the controller runs (`schema.identity()`: version and a
fingerprint of the code). To get it there the controller ships a wheelhouse: a wheel of its
own teredo-fleet plus a wheel of each dependency *as installed here*, so a host ends up with
the controller's exact versions, with no index, no network and no build tools on the host.

* teredo-fleet from a source checkout (an editable install, as in development) is built with
  `pip wheel --no-build-isolation --no-index` out of a copy of the tree: the build backend is
  the setuptools of this environment (`setuptools>=70.1` in the `remote` extra, which builds
  wheels by itself), and the checkout is left untouched (no build/ or egg-info in it).
* an installed distribution (teredo-fleet from a wheel, and the dependencies) is packed back
  into a wheel from its own RECORD: the files pip put down, with their dist-info.

Wheels with compiled parts (PyYAML, MarkupSafe) carry this machine's tags: a host of another
architecture or Python minor version refuses them, and pip says so, which the controller
reports as the host's failure.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from miredoctl.errors import MiredoctlError, one_line
from miredoctl.remote import schema

SOURCE_PARTS = ("pyproject.toml", "README.md", "engine", "miredoctl", "teredolab", "templates")
SKIP_IN_WHEEL = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _needed(texts: list[str]) -> list[str]:
    """The names among requirement strings that apply here (markers evaluated, no extras)."""
    from packaging.requirements import Requirement  # comes with ansible-core (remote extra)
    names = []
    for text in texts:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def closure(names: list[str]) -> list[md.Distribution]:
    """The distributions `names` need, transitively, as installed here (themselves included)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if _norm(name) in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise MiredoctlError(f"cannot ship teredo-fleet: its dependency {name} is not "
                                 "installed on the controller (pip install it here)")
        seen[_norm(name)] = dist
        todo += _needed(dist.requires or [])
    return list(seen.values())


def _wheel_requires(wheel: Path) -> list[str]:
    """Requires-Dist of a built wheel: the checkout's pyproject.toml may have gained a
    dependency since this environment's (editable) install recorded its metadata."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return list(meta.get_all("Requires-Dist") or [])


def source_checkout() -> Path | None:
    """The checkout this controller's code runs from (an editable install, or a run from the
    tree), or None when it runs from an installed wheel. Told by the code's own location: the
    package metadata of an editable install may be a stale egg-info in the checkout."""
    top = Path(schema.__file__).resolve().parents[2]
    return top if (top / "pyproject.toml").is_file() and (top / "miredoctl").is_dir() else None


def build_source_wheel(src: Path, out: Path) -> Path:
    """A wheel of the checkout at `src`, built from a copy (the checkout is left as it is)."""
    with tempfile.TemporaryDirectory(prefix="miredoctl-wheel-") as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        for part in SOURCE_PARTS:
            p = src / part
            if p.is_dir():
                shutil.copytree(p, tree / part, symlinks=False,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif p.is_file():
                shutil.copy(p, tree / part)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "--quiet", "--wheel-dir", str(out), str(tree)],
            capture_output=True, text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})
        if proc.returncode != 0:
            err = [ln for ln in proc.stderr.splitlines() if "rror" in ln] or \
                [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise MiredoctlError(
                f"cannot build the teredo-fleet wheel from {src}: "
                f"{one_line(err[-1] if err else 'pip wheel exit ' + str(proc.returncode))} "
                "(needs setuptools>=70.1 here: pip install 'teredo-fleet[remote]')")
    found = sorted(out.glob("teredo_fleet-*.whl"))
    if not found:
        raise MiredoctlError(f"pip wheel built no teredo-fleet wheel from {src}")
    return found[-1]


def repack(dist: md.Distribution, out: Path) -> Path:
    """An installed distribution back into a wheel: its files as RECORD lists them (scripts
    outside the package folder are left out: pip writes them again from entry_points.txt)."""
    name = dist.metadata["Name"]
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_meta.splitlines()
            if ln.startswith("Tag:")]
    if not tags or not dist.files:
        raise MiredoctlError(f"cannot ship {name} {dist.version}: not installed from a wheel "
                             "here (no WHEEL/RECORD); reinstall it with pip")
    parts = [dict.fromkeys(t.split("-")[i] for t in tags) for i in range(3)]
    tag = "-".join(".".join(p) for p in parts)  # py2-none-any + py3-none-any: py2.py3-none-any
    target = out / f"{_norm(name)}-{dist.version}-{tag}.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        info_dir = ""
        for f in dist.files:
            rel = f.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            parts = rel.split("/")
            if parts[0].endswith(".dist-info"):
                info_dir = parts[0]
                if parts[-1] in SKIP_IN_WHEEL:
                    continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{rel},sha256={digest.decode()},{len(data)}")
        if not info_dir:
            raise MiredoctlError(f"cannot ship {name}: no dist-info in its RECORD")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return target


def build(cache: Path) -> Path:
    """`cache/<identity>.tar`: every wheel a host needs, built once per controller identity."""
    ident = schema.identity()
    tar_path = cache / f"{ident}.tar"
    if tar_path.is_file():
        return tar_path
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=cache) as tmp:
        out = Path(tmp) / "wheels"
        out.mkdir()
        src = source_checkout()
        if src is not None:
            deps = closure(_needed(_wheel_requires(build_source_wheel(src, out))))
        else:
            own = md.distribution(schema.DIST)
            repack(own, out)
            deps = closure(_needed(own.requires or []))
        for dist in deps:
            repack(dist, out)
        part = Path(tmp) / "wheels.tar"
        with tarfile.open(part, "w") as tar:
            for whl in sorted(out.iterdir()):
                tar.add(whl, whl.name)
        os.replace(part, tar_path)
    for old in cache.glob("*.tar"):  # the wheels of earlier identities are of no more use
        if old != tar_path:
            old.unlink(missing_ok=True)
    return tar_path
