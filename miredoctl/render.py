"""Turn validated instances into engine configs, command lines and supervisord program sections.

Rendering leaves the running fleet alone: nothing here writes the state folder or talks to
supervisord (it does read git, for the header, and `checkconf_problems` writes scratch copies for
miredo-checkconf into a folder the caller provides), so `config`, `diff` and a failing `up` can
render everything without touching what runs. `ops` writes the results.

Change detection compares *bodies* (the template output), not whole files: the `# miredoctl:`
header names the inventory commit, and a new commit that leaves an instance's body alone must not
restart that instance.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from miredoctl import access
from miredoctl.errors import InventoryError, MiredoctlError, Problem, bad_character, printable
from miredoctl.inventory import FIELDS, Fleet, Instance, display_path
from miredoctl.listeners import logstamp
from miredoctl.procs import exec_argv
from miredoctl.state import StatePaths
from miredoctl.users import worker_user

HEADER_PREFIX = "# miredoctl: "
TEMPLATE_NAME = "miredo.conf.j2"
MIREDO = "/usr/sbin/miredo"
MIREDO_SERVER = "/usr/sbin/miredo-server"
MIREDO_CHECKCONF = "/usr/sbin/miredo-checkconf"
MIREDO_USERS = {"client": "miredo", "relay": "miredo", "server": "miredo-server"}
REAPER = "_reaper"  # instance names start with a letter or digit, so these never clash
LOGSTAMP = "_logstamp"
EXPORTER = "_exporter"  # `miredoctl exporter`, when the inventory asks for it (docs/metrics.md)
HEALER = "_healer"  # health checks and notifications (miredoctl.listeners.health)
PRIORITY = {"server": 10, "relay": 20, "client": 30}

# Process settings for a daemon that may fork and drops privileges: stop/kill the whole process
# group (miredo has a root parent, a worker and a privileged helper, and a stop that reaches only
# the parent leaves the worker holding the TUN device), restart on any exit, and give it a few
# seconds to prove it started.
PROGRAM_SETTINGS = {
    "autostart": "true",
    "autorestart": "true",
    "startsecs": "2",
    "startretries": "5",
    "stopsignal": "TERM",
    "stopwaitsecs": "10",
    "stopasgroup": "true",
    "killasgroup": "true",
    "redirect_stderr": "true",
    "stdout_logfile_maxbytes": "5MB",
    "stdout_logfile_backups": "3",
    # every output chunk also goes to the `_logstamp` listener, which writes it with times
    "stdout_events_enabled": "true",
}


@dataclass
class Rendered:
    """Everything miredoctl writes for one instance."""

    inst: Instance
    body: str
    header: str
    command: list[str]
    program: str

    @property
    def name(self) -> str:
        return self.inst.name

    @property
    def text(self) -> str:
        return self.header + self.body

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()


def body_of(text: str) -> str:
    """A rendered file without miredoctl's header lines (what change detection compares)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith(HEADER_PREFIX):
        i += 1
    return "".join(lines[i:])


def default_template() -> Path:
    """The project's default template, found as package data so a wheel install has it too.

    In a source checkout `miredoctl/templates/miredo.conf.j2` is a symlink to the top-level
    `templates/miredo.conf.j2` (the file operators edit); resolving it shows that path in
    headers and errors. A wheel carries a real copy (setuptools copies symlinked files).
    """
    res = importlib.resources.files("miredoctl").joinpath("templates", TEMPLATE_NAME)
    path = Path(str(res)).resolve()
    if not path.is_file():
        raise InventoryError([Problem(str(path), 0, "the default template is missing from the "
                                                    "miredoctl package (reinstall it)")])
    return path


def template_path(fleet: Fleet) -> Path:
    """A fleet folder may carry its own template; otherwise the project's default."""
    own = fleet.root / "templates" / TEMPLATE_NAME
    return own if own.is_file() else default_template()


class _GitInfo:
    """The last commit that touched each inventory file, and whether it is edited since."""

    def __init__(self, root: Path) -> None:
        self.top: Path | None = None
        self.cache: dict[Path, str] = {}
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return
        if out.returncode == 0:
            self.top = Path(out.stdout.strip())

    def prefetch(self, paths: list[Path]) -> None:
        """Describe many files with two git calls instead of two per file (200 calls, 0.9 s, at
        100 instances): one `git status` for the edited ones and one walk of the log that stops
        once every file has its last commit. A file the walk does not name (only touched by a
        merge, renamed...) is left to `describe`'s own calls."""
        if self.top is None or os.environ.get("MIREDOCTL_FLEET_COMMIT"):
            return
        todo = {p for p in paths if p not in self.cache}
        if not todo:
            return
        args = ["--", *sorted(map(str, todo))]
        try:  # not through _git: its strip() would eat the first entry's status column
            dirty_out = subprocess.run(["git", "-C", str(self.top), "status", "--porcelain",
                                        "-z", "--no-renames", *args], capture_output=True,
                                       text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return
        if dirty_out.returncode != 0:
            return
        dirty = {(self.top / entry[3:]).resolve() for entry in dirty_out.stdout.split("\0")
                 if len(entry) > 3}
        found: dict[Path, str] = {}
        try:
            proc = subprocess.Popen(["git", "-C", str(self.top), "log", "--format=>%h",
                                     "--name-only", "--no-renames", *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return
        try:
            commit = ""
            for line in proc.stdout or ():
                line = line.rstrip("\n")
                if line.startswith(">"):
                    commit = line[1:]
                elif line and commit:
                    path = (self.top / line).resolve()
                    if path in todo and path not in found:
                        found[path] = commit
                        if len(found) == len(todo):
                            break
        finally:
            proc.kill()
            proc.wait()
        for path, commit in found.items():
            self.cache[path] = f"git {commit}" + (", edited since" if path in dirty else "")

    def describe(self, path: Path) -> str:
        shipped = os.environ.get("MIREDOCTL_FLEET_COMMIT")
        if shipped:  # on a host of a fleet across hosts: the commit the controller shipped
            return f"fleet commit {shipped}"
        if self.top is None:
            return "not in git"
        if path not in self.cache:
            commit = self._git("log", "-1", "--format=%h", "--", str(path))
            dirty = self._git("status", "--porcelain", "--", str(path))
            if not commit:
                text = "not committed"
            else:
                text = f"git {commit}" + (", edited since" if dirty else "")
            self.cache[path] = text
        return self.cache[path]

    def _git(self, *args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(self.top), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""


def engine_command(inst: Instance, paths: StatePaths) -> list[str]:
    """The argv supervisord runs: the contract command line, inside `ip netns exec` if asked.

    `ip netns exec` execs the command (it forks only in batch mode), so the pid supervisord
    watches is the engine's own and signals (TERM, HUP) reach it directly.
    """
    conf, pid = str(paths.config(inst.name)), str(paths.pidfile(inst.name))
    if inst.engine == "miredo":
        binary = MIREDO_SERVER if inst.role == "server" else MIREDO
        argv = [binary, "-f", "-c", conf, "-p", pid, "-u",
                worker_user(inst) or MIREDO_USERS[inst.role]]
    else:
        argv = [*engine_argv0(), "-f", "-c", conf, "-p", pid,
                "--status-socket", str(paths.status_socket(inst.name))]
        if worker_user(inst):
            argv += ["-u", worker_user(inst)]
    if inst.get("chroot"):
        argv += ["-t", inst.get("chroot")]
    if inst.netns:
        argv = exec_argv(inst.netns, argv, ip=shutil.which("ip") or "/usr/bin/ip")
    return argv


def engine_argv0() -> list[str]:
    """Our engine from the same virtualenv as miredoctl (script next to the interpreter)."""
    script = Path(sys.executable).parent / "teredo-engine"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "engine"]


def _ini(value: str) -> str:
    """One INI value for supervisord: %(name)s is expanded there, so a literal % is doubled;
    a line break would start a new option or section, so none may pass (validation refuses
    them in the inventory; this holds for state-folder paths from the command line too)."""
    bad = bad_character(value)
    if bad:
        raise MiredoctlError(f"refusing to write {bad} into supervisord's configuration: "
                             f"{printable(value)}")
    return value.replace("%", "%%")


# supervisord's parser cuts a value at ';' or '#' that follows whitespace (an inline comment)
_INLINE_COMMENT = re.compile(r"(\s)([;#])")


def _ini_command(argv: list[str]) -> str:
    """A command line as supervisord reads it back: its INI parser, then shlex.split.

    shlex.join quotes each argument, but a quoted ' ;' would still end the value as an inline
    comment. Closing and reopening the quote between the space and the ';' ('a '';b' is the
    same word to shlex) leaves no whitespace right before it.
    """
    # shlex.quote puts any argument with whitespace or '(' in single quotes, so each '' lands
    # inside them. supervisord replaces the text '%(here)s' even in '%%(here)s' (expand_here
    # runs before %-expansion), so a '%' is also kept apart from a following '('.
    return _ini(" ".join(_INLINE_COMMENT.sub(r"\1''\2", shlex.quote(arg)).replace("%(", "%''(")
                         for arg in argv))


def program_section(inst: Instance, command: list[str], paths: StatePaths) -> str:
    lines = [
        "; miredoctl: generated, do not edit",
        f"[program:{inst.name}]",
        f"command={_ini_command(command)}",
        f"directory={_ini(str(paths.root))}",
        f"priority={PRIORITY[inst.role]}",
        *(f"{k}={v}" for k, v in PROGRAM_SETTINGS.items()),
        f"stdout_logfile={_ini(str(paths.log(inst.name)))}",
        f'environment=MIREDOCTL_INSTANCE="{_ini(inst.name)}"',
    ]
    return "\n".join(lines) + "\n"


def _one_line_value(value: Any) -> Any:
    """Every `{{ }}` of the template passes here: miredo.conf has no quoting, so a value with a
    line break would add a directive of its own. Validation already refuses such values; this
    also covers a fleet's own template and values it computes."""
    bad = bad_character(str(value)) if value is not None else None
    if bad:
        raise jinja2.TemplateRuntimeError(f"a value with {bad} cannot be written into "
                                          f"miredo.conf: {printable(str(value))}")
    return value


def render_fleet(fleet: Fleet, paths: StatePaths, names: list[str] | None = None
                 ) -> dict[str, Rendered]:
    """Render the selected (default: all enabled) instances; template errors are file:line."""
    tpath = template_path(fleet)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tpath.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False, finalize=_one_line_value)
    shown = display_path(tpath)
    try:
        template = env.get_template(tpath.name)
    except jinja2.TemplateSyntaxError as exc:
        raise InventoryError([Problem(shown, exc.lineno, f"template error: {exc.message}")])
    except jinja2.TemplateError as exc:
        raise InventoryError([Problem(shown, 0, f"template error: {exc}")])
    git = _GitInfo(fleet.root)
    selected = names if names is not None else fleet.names
    git.prefetch(sorted({p.resolve() for n in selected for p in fleet.instances[n].sources}))
    problems: list[Problem] = []
    out: dict[str, Rendered] = {}
    for name in names if names is not None else fleet.names:
        inst = fleet.instances[name]
        context: dict[str, Any] = {
            "name": inst.name, "role": inst.role, "engine": inst.engine, "netns": inst.netns,
            "v": {key: inst.values.get(key) for key in FIELDS},
        }
        try:
            body = template.render(**context)
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", 0) or 0
            problems.append(Problem(shown, line, f"template error for {name}: {exc}"))
            continue
        sources = " + ".join(f"{display_path(p)} ({git.describe(p.resolve())})"
                             for p in inst.sources)
        digest = hashlib.sha256(body.encode()).hexdigest()
        header = "".join(HEADER_PREFIX + printable(line) + "\n" for line in (
            "generated file, do not edit: change the inventory and run `miredoctl up`",
            f"instance {name} (role {inst.role}, engine {inst.engine})",
            f"from {sources}",
            f"template {shown}",
            f"sha256 {digest}",
        ))
        command = engine_command(inst, paths)
        out[name] = Rendered(inst, body, header, command, program_section(inst, command, paths))
    if problems:
        raise InventoryError(problems)
    return out


def checkconf_problems(rendered: dict[str, Rendered], scratch: Path) -> list[Problem]:
    """Run `miredo-checkconf` on client/relay configs (it cannot read miredo-server.conf).

    Every file must pass: the rendered configs are promised to work with both engines. Skipped
    when miredo is not installed (it is optional for teredo-engine-only fleets).
    """
    if not os.access(MIREDO_CHECKCONF, os.X_OK):
        return []
    problems = []
    for name, r in sorted(rendered.items()):
        if r.inst.role == "server":
            continue
        path = scratch / f"{name}.conf"
        path.write_text(r.text)
        proc = subprocess.run([MIREDO_CHECKCONF, str(path)], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            detail = "; ".join(line for line in proc.stderr.splitlines()
                               if line and "Fatal configuration error" not in line)
            problems.append(Problem(display_path(r.inst.file), 0,
                                    f"miredo-checkconf rejects the rendered config: "
                                    f"{detail or proc.stderr.strip()}"))
    return problems


def exporter_program(paths: StatePaths, listen: str, fleet_dir: Path) -> list[str]:
    """The metrics exporter as a program of the fleet's supervisord, so it is up whenever the
    fleet is and stops with it. It reads what `status` reads (supervisord's socket, the engines'
    status sockets, `ip` in namespaces), hence runs as supervisord's user (root); it binds
    only the address the inventory names, loopback by default."""
    cmd = [sys.executable, "-m", "miredoctl.cli", "exporter", "--listen", listen,
           "--fleet", str(fleet_dir.resolve()), *paths.cli_args()]
    return [
        "; serves /metrics for Prometheus (miredoctl exporter; inventory: exporter.listen)",
        f"[program:{EXPORTER}]",
        f"command={_ini_command(cmd)}",
        f"directory={_ini(str(paths.root))}",
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        "priority=5",
        "stopsignal=TERM",
        "stopwaitsecs=5",
        "redirect_stderr=true",
        f"stdout_logfile={_ini(str(paths.logs / 'exporter.log'))}",
        "stdout_logfile_maxbytes=1MB",
        "stdout_logfile_backups=1",
        "",
    ]


@dataclass(frozen=True)
class FleetLimits:
    """supervisord settings that must grow with the number of programs it runs."""

    minfds: int
    minprocs: int
    reaper_buffer: int
    logstamp_buffer: int


def _ceil_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def fleet_limits(instances: int) -> FleetLimits:
    """Sizes for a fleet of `instances` engines, rounded up to powers of two.

    * `minfds`: supervisord holds pipes to each program and its log files, up to 16
      descriptors per instance (docs/operations.md §1.7), and cannot spawn a program it has
      no descriptor for; its default 1024 capped a fleet at a few hundred instances.
    * `minprocs`: a teredo-engine is 2 processes, Debian's miredo up to 3; 8 per instance.
    * listener buffers: supervisord queues each event for a busy listener and drops the oldest
      one when the queue is full (`pool _reaper event buffer overflowed`: 93-95 dropped at 100
      instances with 100 slots). A start-up burst queues 2 PROCESS_STATE events per engine
      (STARTING, RUNNING), a whole-fleet stop 2 more, a crash loop 3 per restart: 16 slots per
      instance is 4 bursts at once. The log listener gets many chunks per engine: 32 each.
    Powers of two keep the rendered supervisord.conf unchanged while the fleet grows a little:
    a changed listener section makes `up` re-create the listener, and an event arriving while
    it is re-created is lost. supervisord reads `minfds` and `minprocs` only when it starts.
    """
    n = max(0, instances)
    return FleetLimits(minfds=max(1024, _ceil_pow2(256 + 16 * n)),
                       minprocs=max(200, _ceil_pow2(64 + 8 * n)),
                       reaper_buffer=max(1024, _ceil_pow2(16 * n)),
                       logstamp_buffer=max(1024, _ceil_pow2(32 * n)))


def supervisord_conf(paths: StatePaths, identifier: str, exporter: str | None = None,
                     fleet_dir: Path | None = None, instances: int = 0) -> str:
    """The fleet's own supervisord: owner-only socket, pid and log in the state folder; with
    `exporter` (the inventory's `exporter.listen`) also the metrics exporter for `fleet_dir`.
    `instances` (the enabled instances) sizes the descriptor, process and event limits."""
    limits = fleet_limits(instances)
    reaper_cmd = [sys.executable, "-m", "miredoctl.listeners.reaper",
                  "--history", str(paths.histories)]
    logstamp_cmd = [sys.executable, "-m", "miredoctl.listeners.logstamp",
                    "--logs", str(paths.timed_logs)]
    healer_cmd = [sys.executable, "-m", "miredoctl.listeners.health",
                  "--history", str(paths.histories), "--socket", str(paths.socket),
                  "--run", str(paths.run), "--lock", str(paths.lock)]
    return "\n".join([
        "; miredoctl: generated, do not edit",
        "[unix_http_server]",
        f"file={_ini(str(paths.socket))}",
        # owner-only, or also the readers' group when it exists (miredoctl/access.py)
        *(["chmod=0770", f"chown={_ini(owner)}"] if (owner := access.socket_owner())
          else ["chmod=0700"]),
        "",
        "[supervisord]",
        f"pidfile={_ini(str(paths.supervisord_pid))}",
        f"logfile={_ini(str(paths.supervisord_log))}",
        "logfile_maxbytes=5MB",
        "logfile_backups=3",
        f"childlogdir={_ini(str(paths.logs))}",
        f"directory={_ini(str(paths.root))}",
        f"identifier={_ini(identifier)}",
        f"minfds={limits.minfds}",
        f"minprocs={limits.minprocs}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_ini(str(paths.socket))}",
        "",
        "; kills what an engine leaves behind when its main process dies, and records every",
        "; state change in history/NAME.jsonl for restart counts (miredoctl.listeners.reaper)",
        f"[eventlistener:{REAPER}]",
        f"command={_ini(shlex.join(reaper_cmd))}",
        "events=PROCESS_STATE",
        f"buffer_size={limits.reaper_buffer}",
        "autorestart=true",
        "priority=1",
        "stdout_logfile=NONE",
        f"stderr_logfile={_ini(str(paths.logs / 'reaper.log'))}",
        "stderr_logfile_maxbytes=1MB",
        "stderr_logfile_backups=1",
        "",
        "; writes engine output with a time on each line to logs/timed/",
        "; (miredoctl.listeners.logstamp)",
        f"[eventlistener:{LOGSTAMP}]",
        f"command={_ini(shlex.join(logstamp_cmd))}",
        "events=" + ",".join(logstamp.EVENTS),
        f"buffer_size={limits.logstamp_buffer}",
        "autorestart=true",
        "priority=1",
        "stdout_logfile=NONE",
        f"stderr_logfile={_ini(str(paths.logs / 'logstamp.log'))}",
        "stderr_logfile_maxbytes=1MB",
        "stderr_logfile_backups=1",
        "",
        "; restarts clients that stay unqualified, stops flapping instances, sends the",
        "; inventory's notifications (miredoctl.listeners.health; docs/miredoctl.md)",
        f"[eventlistener:{HEALER}]",
        f"command={_ini(shlex.join(healer_cmd))}",
        "events=PROCESS_STATE,TICK_5",
        f"buffer_size={limits.reaper_buffer}",
        "autorestart=true",
        "priority=1",
        "stdout_logfile=NONE",
        f"stderr_logfile={_ini(str(paths.logs / '_healer.log'))}",
        "stderr_logfile_maxbytes=1MB",
        "stderr_logfile_backups=1",
        "",
        *(exporter_program(paths, exporter, fleet_dir)
          if exporter is not None and fleet_dir is not None else []),
        "[include]",
        f"files={_ini(str(paths.programs))}/*.conf",
        "",
    ])
