"""The per-host agent: what the controller runs on each host, over SSH, through ansible-core.

`python -m miredoctl.remote.agent --host H --root DIR --state-dir DIR --commit C -- ARGS...`
reads the fleet bundle (a gzipped tar of one commit of the fleet folder, base64) on stdin,
unpacks it once per commit under `ROOT/fleets/`, and runs the very same `miredoctl ARGS --json`
on this host, restricted to the instances whose `host:` is H (`MIREDOCTL_THIS_HOST`). Its
answer is one JSON envelope on stdout (`schema.SCHEMA`), whatever happened, so the controller
never has to parse miredoctl's human output.

The inner miredoctl runs as a child with its output in files, not pipes: `up` may start the
host's supervisord, which must not inherit the SSH channel (the session would never end).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from miredoctl.remote import schema

KEEP_FLEETS = 5  # old commits kept on a host (for a look at what ran before)


def _unpack(root: Path, commit: str, bundle: bytes) -> Path:
    """The fleet folder of `commit` on this host; unpacked atomically so a dropped connection
    leaves either no folder or a whole one."""
    fleets = root / "fleets"
    dest = fleets / commit
    if dest.is_dir():
        return dest
    if not bundle:
        raise RuntimeError(f"fleet {commit} is not on this host and no bundle was sent")
    fleets.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=f".{commit}-", dir=fleets))
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            _extract(tar, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted((p for p in fleets.iterdir() if p.is_dir() and not p.name.startswith(".")),
                 key=lambda p: p.stat().st_mtime)
    for p in old[:-KEEP_FLEETS]:
        if p != dest:
            shutil.rmtree(p, ignore_errors=True)
    return dest


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """tarfile's "data" filter where this Python has it (3.11.4 on); on an older one (Debian
    12 ships 3.11.2) the same refusals by hand: no absolute or upward paths, no links or
    devices (a fleet bundle holds folders and plain files)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"refused bundle member {m.name!r}")
        m.mode = (m.mode | 0o600) & 0o755
        tar.extract(m, dest)


IN_PROCESS = ("status", "show", "logs", "config", "diff", "metrics")  # read-only


def _inner(fleet: Path, state: Path, args: list[str], env: dict[str, str]
           ) -> tuple[int, Any, str]:
    if args[:1] and args[0] in IN_PROCESS:
        return _in_process(fleet, state, args, env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # its own session: when the SSH connection drops, the hangup must not kill an `up`
        # half way; the host finishes what it was asked (a second `up` then finds it done)
        rc = subprocess.call([sys.executable, "-m", "miredoctl.cli", "--fleet", str(fleet),
                              "--state-dir", str(state), "--json", *args],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                             start_new_session=True)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        errors = err.read().decode(errors="replace").strip()
    try:
        result = json.loads(text) if text.strip() else None
    except ValueError:
        result = None
        errors = (errors + "\n" + text).strip()
    return rc, result, errors


def _in_process(fleet: Path, state: Path, args: list[str], env: dict[str, str]
                ) -> tuple[int, Any, str]:
    """`status` in this process: it saves a Python start-up (a third of the agent's time)."""
    from miredoctl import cli
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["--fleet", str(fleet), "--state-dir", str(state), "--json", *args])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if args[:1] == ["metrics"]:  # the Prometheus text format, merged by the controller
        return rc, {"text": out.getvalue()}, err.getvalue().strip()
    try:
        result = json.loads(out.getvalue()) if out.getvalue().strip() else None
    except ValueError:
        return rc, None, (err.getvalue() + "\n" + out.getvalue()).strip()
    return rc, result, err.getvalue().strip()


class _MarkFirstFlush(io.TextIOBase):
    """stdout for `logs -f`: after the first flush (the last lines, before any new one) a
    `{"live": true}` line tells the controller this host's first part is complete."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner, self.marked = inner, False

    def write(self, text: str) -> int:
        return self.inner.write(text)

    def flush(self) -> None:
        if not self.marked:
            self.marked = True
            self.inner.write('{"live": true}\n')
        self.inner.flush()


def _stream(fleet: Path, state: Path, args: list[str], env: dict[str, str]) -> int:
    """`logs -f --json` with its JSON lines straight to stdout (miredoctl/remote/follow.py
    reads them); it ends when stdin ends, which is when the controller or its connection
    went, so nothing is left following on the host."""
    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    os.environ.update(env)
    # wrapped before miredoctl.cli (and with it miredoctl.logs, whose `show` takes the
    # sys.stdout of its import as its default output) is imported
    sys.stdout = _MarkFirstFlush(sys.stdout)
    from miredoctl import cli
    try:
        return cli.main(["--fleet", str(fleet), "--state-dir", str(state), "--json", *args])
    except OSError:  # nobody reads any more
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="miredoctl-agent")
    p.add_argument("--host", required=True)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--commit", required=True)
    p.add_argument("--dirty", action="store_true")
    p.add_argument("--fleet", type=Path, default=None,
                   help="use this fleet folder as it is, nothing unpacked (the controller's "
                        "own instances without host:, for logs -f)")
    p.add_argument("--expect", default=None, help="the controller's version+fingerprint")
    p.add_argument("--install", default=None, help="the controller's install_id")
    p.add_argument("--settle", type=float, default=0.0,
                   help="reload: seconds to wait for the engines after the HUP")
    p.add_argument("args", nargs=argparse.REMAINDER)
    opts = p.parse_args(argv)
    started = time.monotonic()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a dropped connection: finish, answer nobody
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    envelope: dict[str, Any] = {"schema": schema.SCHEMA, "host": opts.host,
                                "version": schema.version(), "identity": schema.identity(),
                                "commit": opts.commit, "rc": None, "result": None,
                                "stderr": "", "rolled_back": []}
    # `logs -f` streams: the bundle is one line and stdin stays open while the stream runs
    stream = args[:1] == ["logs"] and any(a in ("-f", "--follow") for a in args)
    bundle = base64.b64decode((sys.stdin.readline() if stream else sys.stdin.read()).strip()
                              or b"")
    same_install = opts.install is not None and opts.install == schema.install_id()
    if opts.expect and opts.expect != envelope["identity"] and not same_install:
        envelope.update(rc=schema.EXIT_VERSION, stderr=(
            f"teredo-fleet {envelope['identity']} here, controller has {opts.expect}"))
        print(json.dumps(envelope))
        return schema.EXIT_VERSION
    try:
        fleet = opts.fleet or _unpack(opts.root, opts.commit, bundle)
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        envelope.update(rc=1, stderr=f"cannot unpack the fleet on {opts.host}: {exc}")
        print(json.dumps(envelope))
        return 1
    env = dict(os.environ, MIREDOCTL_THIS_HOST=opts.host, MIREDOCTL_FLEET_COMMIT=(
        opts.commit + (" (controller tree had uncommitted edits, not shipped)"
                       if opts.dirty else "")))
    if stream:
        return _stream(fleet, opts.state_dir, args, env)
    before = _snapshot(opts.state_dir) if args[:1] == ["reload"] else {}
    rc, result, errors = _inner(fleet, opts.state_dir, args, env)
    if args[:1] == ["reload"] and rc in (0, 1):
        rc, errors = _verify_reload(opts, fleet, env, before, result, rc, errors, envelope)
    envelope.update(rc=rc, result=result, stderr=errors,
                    elapsed=round(time.monotonic() - started, 3))
    try:
        print(json.dumps(envelope), flush=True)
    except OSError:  # nobody listens any more (the connection dropped)
        pass
    return rc


def _snapshot(state: Path) -> dict[str, str]:
    configs = state / "configs"
    if not configs.is_dir():
        return {}
    # files only: a state folder someone tampered with must not stop the snapshot (and with it
    # the rollback) of the configs that are fine
    return {p.stem: p.read_text() for p in configs.glob("*.conf") if p.is_file()}


def _verify_reload(opts: argparse.Namespace, fleet: Path, env: dict[str, str],
                   before: dict[str, str], result: Any, rc: int, errors: str,
                   envelope: dict[str, Any]) -> tuple[int, str]:
    """A rolling reload must not leave a host broken for the next batch to follow: after the
    HUPs, the signalled engines must still be up (`wait`); if not, the configs they ran are
    put back and signalled again, and the host counts as failed."""
    names = [r["name"] for r in (result or {}).get("results", [])
             if r.get("action") == "signalled"]
    if rc == 0 and names:
        time.sleep(opts.settle)
        wrc, _wres, werr = _inner(fleet, opts.state_dir, ["wait", "--timeout", "10", *names],
                                  env)
        if wrc == 0:
            return rc, errors
        errors = (errors + "\n" + (werr or "engines not up after the reload")).strip()
    elif rc == 0:
        return rc, errors
    restored = []
    for name, text in before.items():
        path = opts.state_dir / "configs" / f"{name}.conf"
        try:
            if path.read_text() != text:
                path.write_text(text)
                restored.append(name)
        except OSError:
            continue
    if restored:
        _inner(fleet, opts.state_dir, ["restart", *restored], env)
    envelope["rolled_back"] = restored
    return 1, errors


if __name__ == "__main__":
    sys.exit(main())
