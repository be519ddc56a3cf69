"""Where one fleet keeps its files: runtime, persistent records and logs, and the fleet lock.

Why a folder per fleet: two fleets (or a test and the demo) on one machine must never share a
supervisord, a socket or a rendered file. The fleet folder itself is never written to: it is
the operator's git checkout. Three folders per fleet (docs/miredoctl.md, "Boot, service and
layout"): sockets and pid files under /run/miredoctl/<fleet>/ (gone at reboot, as they
should be), rendered configs and histories under /var/lib/miredoctl/<fleet>/ (survive a
reboot, so restart counts do), logs under /var/log/miredoctl/<fleet>/. `--state-dir DIR` puts
all three in one folder, the layout of earlier releases.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from miredoctl import access
from miredoctl.errors import MiredoctlError, StateFolderError
from miredoctl.procs import read_pid

SUN_PATH_MAX = 107
"""Bytes in a UNIX socket's path: `sockaddr_un.sun_path` is 108 with the final NUL (unix(7))."""
DEFAULT_STATE_BASE = Path("/run/miredoctl")  # runtime: sockets, pid files, the lock
DEFAULT_LIB_BASE = Path("/var/lib/miredoctl")  # persistent: configs, histories, the record
DEFAULT_LOG_BASE = Path("/var/log/miredoctl")


def fleet_hash(fleet_dir: Path) -> str:
    """The folder name of the layout before fleets had names (/run/miredoctl/<hash>/)."""
    return hashlib.sha256(str(Path(fleet_dir).resolve()).encode()).hexdigest()[:12]


def default_state_dir(fleet_dir: Path) -> Path:
    """The single state folder of the layout before fleets had names (see miredoctl.fleets)."""
    return DEFAULT_STATE_BASE / fleet_hash(fleet_dir)


@dataclass(frozen=True)
class StatePaths:
    """Where everything of one fleet lives; only this class knows the layout.

    `root` is the runtime folder (socket, pid files, lock); `lib` holds what must survive a
    reboot (rendered configs, program sections, supervisord.conf, histories, the fleet
    record); `logdir` the logs. Given only `root`, all three are that one folder (with logs in
    `root/logs`), as `--state-dir` and the tests use it.
    """

    root: Path
    lib: Path | None = None
    logdir: Path | None = None
    name: str = ""  # the fleet's name (miredoctl.fleets), "" when nobody said

    def __post_init__(self) -> None:
        if self.lib is None:
            object.__setattr__(self, "lib", self.root)
        if self.logdir is None:
            object.__setattr__(self, "logdir", self.root / "logs")

    @property
    def single(self) -> bool:
        """All in one folder (`--state-dir`, or a fleet adopted from the old layout)."""
        return self.lib == self.root and self.logdir == self.root / "logs"

    @property
    def lib_root(self) -> Path:
        assert self.lib is not None
        return self.lib

    def cli_args(self) -> list[str]:
        """The options that give a miredoctl child (the exporter) these same folders."""
        if self.single:
            return ["--state-dir", str(self.root)]
        return ["--run-dir", str(self.root), "--lib-dir", str(self.lib),
                "--log-dir", str(self.logdir)]

    @property
    def record(self) -> Path:
        """Who this fleet is and what it claims (miredoctl.fleets): `ls` and clash checks."""
        return self.lib_root / "fleet.json"

    @property
    def configs(self) -> Path:
        return self.lib_root / "configs"

    @property
    def programs(self) -> Path:
        return self.lib_root / "programs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        assert self.logdir is not None
        return self.logdir

    @property
    def timed_logs(self) -> Path:
        """Engine output with a time on every line (written by `miredoctl.listeners.logstamp`)."""
        return self.logs / "timed"

    @property
    def histories(self) -> Path:
        """Process state changes per instance (written by `miredoctl.listeners.reaper`)."""
        return self.lib_root / "history"

    @property
    def supervisord_conf(self) -> Path:
        return self.lib_root / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.logs / "supervisord.log"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def config(self, name: str) -> Path:
        return self.configs / f"{name}.conf"

    def program(self, name: str) -> Path:
        return self.programs / f"{name}.conf"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def status_socket(self, name: str) -> Path:
        return self.run / f"{name}.sock"

    def sockets_too_long(self, names: list[str]) -> str | None:
        """Why supervisord's or an engine's socket cannot be bound in this run folder, or None.

        A UNIX socket's path holds at most `SUN_PATH_MAX` bytes; past that, supervisord exits
        with "AF_UNIX path too long" and an engine cannot open its status socket, long after
        the configs were written.  Checked before `up` writes anything."""
        candidates = [self.socket] + [self.status_socket(n) for n in names]
        longest = max(candidates, key=lambda p: len(os.fsencode(p)))
        size = len(os.fsencode(longest))
        if size <= SUN_PATH_MAX:
            return None
        return (f"{longest}: socket path of {size} bytes, more than the {SUN_PATH_MAX} a UNIX "
                f"socket can have; choose a shorter run folder (--run-dir or --state-dir)")

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def timed_log(self, name: str) -> Path:
        return self.timed_logs / f"{name}.log"

    def history(self, name: str) -> Path:
        return self.histories / f"{name}.jsonl"

    def ensure(self) -> None:
        """Create the folders; owner-only because the socket and configs are control surfaces.

        Touches nothing that is already right: on a read-only or full state folder `down`
        must still get through here (a chmod is refused on a read-only mount even when it
        would change nothing). Raises StateFolderError naming the folder that failed.
        """
        for path in (self.root, self.lib_root, self.configs, self.programs, self.run,
                     self.logs, self.timed_logs, self.histories):
            if not path.is_dir():
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise state_error(exc, path) from exc
        # the engines drop to an unprivileged user but their root parent writes the pid file;
        # the run folder must stay reachable for that parent only.
        # shared with the readers' group when it exists (miredoctl/access.py)
        for path, mode in ((self.root, access.state_dir_mode()),
                           (self.lib_root, access.state_dir_mode()),
                           (self.run, access.run_dir_mode())):
            try:
                access.share(path)
                if path.stat().st_mode & 0o7777 != mode:
                    os.chmod(path, mode)
            except OSError as exc:
                raise state_error(exc, path) from exc


def state_error(exc: OSError, path: Path | str | None = None) -> StateFolderError:
    """One line, `path: what happened`, for a state folder the system refuses to write to.

    A read-only or full disk is an operator's problem to fix, not a miredoctl bug: it must
    never surface as an "internal error", and it names the file so the operator knows which
    mount to look at.
    """
    where = str(path if path is not None else exc.filename or "state folder")
    reason = exc.strerror or str(exc)
    hint = {errno.EROFS: "the state folder is read-only",
            errno.ENOSPC: "the state folder's file system is full",
            errno.EDQUOT: "the state folder's owner is over quota"}.get(exc.errno or 0)
    return StateFolderError(f"{where}: {reason}" + (f" ({hint})" if hint else ""))


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write via a temp file in the same folder + fsync + rename; skip identical content.

    Returns True when the file changed. Skipping identical content keeps mtimes stable and
    makes "nothing changed" visible to the operator.
    """
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:  # name the file being written, not the temp file never made
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename != str(path):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return True


LOCK_TIMEOUT = 300.0  # longer than the slowest `up`: start, wait for every engine, roll back
LOCK_POLL = 0.1
_OWNER_WIDTH = 120  # the owner record is rewritten in place: no new block on a full disk
# the locks this process holds, so an ops function called under the CLI's lock nests
_held: dict[Path, int] = {}


def lock_timeout() -> float:
    """`MIREDOCTL_LOCK_TIMEOUT` seconds (a script that prefers to fail fast sets 0)."""
    try:
        return max(0.0, float(os.environ.get("MIREDOCTL_LOCK_TIMEOUT", LOCK_TIMEOUT)))
    except ValueError:
        return LOCK_TIMEOUT


def _open_lock(paths: StatePaths) -> int:
    """A descriptor to flock: the `lock` file, read-only if the folder is, else the folder.

    flock needs no write access, so a read-only or full state folder still gets the same lock
    as everyone else; only when the lock file cannot exist at all (a read-only folder that
    never had one) is the folder itself the lock, for every command alike.
    """
    try:
        return os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES):
            raise state_error(exc, paths.lock) from exc
    try:
        return os.open(paths.lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise state_error(exc, paths.lock) from exc


def lock_holder(paths: StatePaths) -> tuple[int | None, str]:
    """(pid, what it runs) of the command holding the fleet lock, for the waiting message.

    The kernel's /proc/locks names the holder even when it could not write the owner record
    (read-only folder); the record adds which command it is when its pid matches.
    """
    pid = None
    try:
        st = paths.lock.stat()
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" not in line and len(fields) > 5 and fields[1] == "FLOCK" \
                    and fields[5] == key:
                pid = int(fields[4])
                break
    except (OSError, ValueError):
        pass
    try:
        owner = paths.lock.read_text(errors="replace").split(maxsplit=1)
    except OSError:
        owner = []
    if len(owner) == 2 and owner[0].isdigit() and (pid is None or int(owner[0]) == pid):
        return int(owner[0]), owner[1].strip()
    return pid, "another miredoctl command"


def _note_owner(fd: int, command: str) -> None:
    """Best effort: who holds the lock, for others' waiting message; never needed to work."""
    record = f"{os.getpid()} miredoctl {command}"[:_OWNER_WIDTH - 1].ljust(_OWNER_WIDTH - 1)
    with contextlib.suppress(OSError):
        os.pwrite(fd, (record + "\n").encode(), 0)


def _say(message: str) -> None:
    print(f"miredoctl: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def fleet_lock(paths: StatePaths, command: str = "command", *, timeout: float | None = None,
               notify: Callable[[str], None] = _say) -> Iterator[None]:
    """Exclusive lock for commands that change the fleet, so two of them never interleave.

    A command that finds the lock taken waits its turn (saying once whom it waits for) instead
    of failing: twenty `reload`s from twenty scripts all happen, one after the other. Re-entrant
    within one process, so the CLI can take it before it looks at anything and the operation it
    calls can take it again.
    """
    key = paths.root.absolute()
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    paths.ensure()
    fd = _open_lock(paths)
    try:
        limit = lock_timeout() if timeout is None else timeout
        deadline = time.monotonic() + limit
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid, what = lock_holder(paths)
                who = f"pid {pid} ({what})" if pid else what
                if time.monotonic() >= deadline:
                    raise MiredoctlError(f"{paths.lock}: the fleet lock is still held by {who} "
                                         f"after {limit:g} s; try again when it has finished "
                                         "(MIREDOCTL_LOCK_TIMEOUT sets the wait)")
                if not said:
                    notify(f"waiting for the fleet lock held by {who}...")
                    said = True
                time.sleep(LOCK_POLL)
        _note_owner(fd, command)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
    finally:
        os.close(fd)


# -- the fleet's processes, found without supervisord ----------------------------------------
@dataclass(frozen=True)
class FleetProcess:
    """One engine (or miredoctl helper) of this state folder, as /proc shows it.

    `members` are every process proven to be it (main process, worker, helpers: a forked
    process keeps its command line); `pid` is the main one, the pid the engine wrote into its
    pid file when that pid is a member; `pgid` its process group (supervisord starts each
    program as a group leader, which is what `killasgroup` and the reaper rely on).
    """

    name: str
    pid: int
    pgid: int
    members: tuple[int, ...]
    started: float | None = None  # Unix time the main process started

    @property
    def leads_group(self) -> bool:
        """The group is this engine's own: killing the group cannot reach anyone else."""
        return self.pgid in self.members


def _args_after(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` (an interpreter's own `-c` may come before the engine's)."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def _boot_time() -> float | None:
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(ln for ln in Path("/proc/stat").read_text().splitlines()
                    if ln.startswith("btime "))
        return float(line.split()[1])
    return None


def identify(paths: StatePaths, argv: list[str], cwd: str = "/") -> str | None:
    """The instance (or `_helper`) a command line belongs to, or None if it is not ours.

    An engine is ours only if its argv names *both* this fleet's config (`-c`) and the pid
    file next to it (`-p`), exactly as render wrote them: a pid in a pid file may have been
    recycled, an editor with the config open is not an engine.
    """
    def resolved(arg: str) -> Path:
        return Path(os.path.normpath(os.path.join(cwd, arg)))

    def given(flag: str) -> list[Path]:
        return [resolved(arg) for arg in _args_after(argv, flag) if arg]

    def norm(path: Path) -> Path:
        return Path(os.path.normpath(path.absolute()))

    root, configs, run = norm(paths.root), norm(paths.configs), norm(paths.run)
    for conf in given("-c"):
        if conf.parent == configs and conf.suffix == ".conf":
            name = conf.stem
            if run / f"{name}.pid" in given("-p"):
                return name
    # miredoctl's own programs, which outlive a killed supervisord too (the exporter keeps
    # its port, so a new one could not bind): see render.supervisord_conf
    if "miredoctl.cli" in argv and "exporter" in argv and (
            root in given("--state-dir") or root in given("--run-dir")):
        return "_exporter"
    if "miredoctl.listeners.reaper" in argv and norm(paths.histories) in given("--history"):
        return "_reaper"
    if "miredoctl.listeners.logstamp" in argv and norm(paths.timed_logs) in given("--logs"):
        return "_logstamp"
    if "miredoctl.listeners.health" in argv and norm(paths.histories) in given("--history"):
        return "_healer"
    return None


def fleet_processes(paths: StatePaths) -> dict[str, FleetProcess]:
    """Every live process of this fleet's engines and helpers, by name, from /proc alone.

    This is how miredoctl finds engines when supervisord cannot tell it (killed, OOM): the pid
    files the engines write name the main process, and the command line proves each process
    is this fleet's before anyone signals it.
    """
    # a cheap first filter: every command line of ours names one of the fleet's folders
    markers = {str(p.name).encode() for p in (paths.root, paths.lib_root, paths.logs)}
    found: dict[str, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not any(m in raw for m in markers):
                continue
            argv = [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]
            cwd = os.readlink(f"/proc/{pid}/cwd") if any(
                not a.startswith("/") for a in argv[1:] if a.endswith((".conf", ".pid"))) \
                else "/"
            name = identify(paths, argv, cwd)
            if name is None:
                continue
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if fields[0] in ("Z", "X"):
            continue
        found.setdefault(name, []).append((pid, int(fields[2])))
    boot = _boot_time()
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, procs in found.items():
        members = tuple(sorted(p for p, _ in procs))
        groups = dict(procs)
        main = None
        if not name.startswith("_"):
            written = read_pid(paths.pidfile(name))  # None also while it is being written
            main = written if written in groups else None
        if main is None:  # no pid file (yet, or removed): the group leader, else the oldest
            main = next((p for p in members if groups[p] == p), members[0])
        started = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            if boot is not None:
                started = boot + int(_stat_fields(main)[19]) / ticks
        out[name] = FleetProcess(name, main, groups[main], members, started)
    return out
