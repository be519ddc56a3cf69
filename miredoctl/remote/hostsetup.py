"""Prepares a host for miredoctl's agent: runs ON THE HOST, under its system Python.

The controller sends this file's source on the agent's usual channel (ansible-core's `command`
with stdin) and runs it with the host's `/usr/bin/python3`: the host may have no teredo-fleet
yet, so this must need nothing but the standard library, and it must not import miredoctl.

Steps, each done only when needed (a second run on a ready host changes nothing, and says so):

1. `--packages`: Debian packages missing per `dpkg-query` are installed with apt-get;
2. the agent's folders: `ROOT`, `ROOT/fleets`, the host's state folder;
3. miredoctl's own venv `ROOT/venv` when `--python` is inside ROOT (a Python elsewhere is the
   operator's, and miredoctl never installs into it: it reports the mismatch instead);
4. teredo-fleet from the controller's wheelhouse (`--wheels`, a tar of wheels: the package and
   its dependencies, installed with `--no-index`), when the Python's teredo-fleet identity is
   not `--identity`; the identity is checked again afterwards.

The answer is one JSON line: {"changed": bool, "steps": [...], "identity": ..., "error": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

IDENTITY = ("from miredoctl.remote import schema; print(schema.identity()); "
            "print(schema.install_id())")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _last(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errs = [ln for ln in lines if "rror" in ln] or lines[-1:]
    return (errs[-1] if errs else f"exit {proc.returncode}")[:300]


def missing_packages(packages: list[str]) -> list[str]:
    out = []
    for pkg in packages:
        q = _run(["dpkg-query", "-W", "-f=${Status}", pkg])
        if q.returncode != 0 or not q.stdout.endswith(" installed"):
            out.append(pkg)
    return out


def identity_of(python: Path, controller_install: str = "") -> str | None:
    """The teredo-fleet identity `python` runs; the controller's own identity when it is the
    controller's very install (same machine and package folder), as the agent judges it: the
    files may be edited between two reads of the fingerprint."""
    if not python.exists():
        return None
    q = _run([str(python), "-c", IDENTITY], env={"PATH": os.environ.get("PATH", "/usr/bin")},
             cwd="/")  # not a checkout that happens to be the current folder
    if q.returncode != 0:
        return None
    lines = q.stdout.split()
    if len(lines) == 2 and controller_install and lines[1] == controller_install:
        return "same-install"
    return lines[0] if lines else None


class Failed(Exception):
    pass


def setup(opts: argparse.Namespace, steps: list[str]) -> bool:
    """Returns whether anything changed; `steps` says what was found or done, in order."""
    changed = False
    packages = [p for p in (opts.packages or "").split(",") if p]
    if packages:
        need = missing_packages(packages)
        if need:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            for argv in (["apt-get", "update", "-qq"],
                         ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need]):
                proc = _run(argv, env=env)
                if proc.returncode != 0:
                    raise Failed(f"{' '.join(argv[:2])}: {_last(proc)}")
            steps.append("installed: " + " ".join(need))
            changed = True
        else:
            steps.append(f"packages present ({len(packages)})")
    root, python = opts.root, opts.python
    for folder, mode in ((root, 0o755), (root / "fleets", 0o700), (opts.state_dir, 0o755)):
        if not folder.is_dir():
            folder.mkdir(parents=True, mode=mode)
            steps.append(f"created {folder}")
            changed = True
    managed = python.is_relative_to(root)
    if not opts.identity:
        return changed
    have = identity_of(python, opts.install)
    if have == "same-install":
        steps.append("teredo-fleet: the controller's own install, present")
        return changed
    if have == opts.identity:
        steps.append(f"teredo-fleet {have} present")
        return changed
    if not managed:
        raise Failed(f"{python} runs teredo-fleet {have or '(none)'}, the controller has "
                     f"{opts.identity}; it is not miredoctl's own venv (under {root}): "
                     f"install teredo-fleet there yourself, or drop miredoctl_python")
    venv = python.parent.parent
    if not python.exists():
        proc = _run([sys.executable, "-m", "venv", str(venv)])
        if proc.returncode != 0:
            raise Failed(f"python3 -m venv {venv}: {_last(proc)} (apt-get install python3-venv)")
        steps.append(f"created venv {venv}")
        changed = True
    if opts.wheels is None:
        raise Failed(f"teredo-fleet {have or '(none)'} here, controller has {opts.identity}, "
                     "and no wheels were sent")
    wheels = opts.wheels.with_suffix("")
    if not wheels.is_dir():
        part = wheels.with_name(wheels.name + ".part")
        part.mkdir(parents=True, exist_ok=True)
        with tarfile.open(opts.wheels) as tar:
            # plain wheel files, nothing else (Debian 12's Python has no extraction filters)
            for member in tar.getmembers():
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise Failed(f"{opts.wheels}: unexpected member {member.name!r}")
                tar.extract(member, part)
        os.replace(part, wheels)
    own = sorted(wheels.glob("teredo_fleet-*.whl"))
    if not own:
        raise Failed(f"{opts.wheels}: no teredo-fleet wheel in it")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-cache-dir", "--no-index", "--find-links", str(wheels)]
    # the dependencies (only what is missing), then teredo-fleet's own files whatever the
    # version number says: an identity differs by code, not always by version
    for argv in ([*pip, str(own[-1])], [*pip, "--no-deps", "--force-reinstall", str(own[-1])]):
        proc = _run(argv, env={"PATH": os.environ.get("PATH", "/usr/bin")})
        if proc.returncode != 0:
            raise Failed(f"pip install: {_last(proc)}")
    now = identity_of(python)
    if now != opts.identity:
        raise Failed(f"installed, yet {python} says teredo-fleet {now}, not {opts.identity}")
    steps.append(f"teredo-fleet {have or '(none)'} -> {now}")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="miredoctl-hostsetup")
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--python", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--identity", default="")
    p.add_argument("--install", default="", help="the controller's install_id")
    p.add_argument("--wheels", type=Path, default=None)
    p.add_argument("--packages", default="")
    opts = p.parse_args(argv)
    steps: list[str] = []
    try:
        changed = setup(opts, steps)
        answer = {"changed": changed, "steps": steps, "error": None}
    except (Failed, OSError, tarfile.TarError, subprocess.SubprocessError) as exc:
        done = [s for s in steps if not s.endswith("present") and "present (" not in s]
        answer = {"changed": bool(done), "steps": steps, "error": str(exc)}
    print(json.dumps(answer))
    return 1 if answer["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
