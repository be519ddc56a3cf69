"""The controller of a fleet across hosts: ships one commit of the fleet to each host, runs the
per-host agent there through ansible-core, and merges the answers.

Why ansible-core as subprocesses (`ansible-playbook` with a generated playbook), not its Python
API: the API is documented as internal and unstable between releases, it owns process-wide
state (display, forks, plugin loaders), and keeping it out of miredoctl's process keeps the
single-host path free of it. The playbook is one task per host, so ansible contributes exactly
what it is trusted for: SSH with the operator's own settings (agent, ~/.ssh/config, ProxyJump,
`ansible_*` variables), `become`, parallel runs, `--limit`, and rolling batches (`serial`,
`max_fail_percentage`). Results come back through ansible-core's `tree` callback: one JSON file
per host with the agent task's result, or the reason the host was unreachable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miredoctl.errors import MiredoctlError, UsageError, one_line
from miredoctl.remote import schema, sshdirect
from miredoctl.remote.hosts import KNOWN_HOSTS, HostsFile

DEFAULT_ROOT = "/var/lib/miredoctl"
# per host name: on one machine (the tests' namespace hosts share /proc) the hosts' engines must
# not look like strays of each other
DEFAULT_STATE = "/run/miredoctl/host-"  # + the host's inventory name
LOCAL = "(local)"  # instances without `host:` run on the controller's machine
CONTROL_PERSIST = os.environ.get("MIREDOCTL_SSH_PERSIST", "60s")
# read-only commands go over plain ssh when the host allows (sshdirect.py: ansible-playbook's
# own start-up is most of their time); whatever changes a host goes through ansible-core
DIRECT = ("status", "show", "logs", "config", "diff", "metrics")


@dataclass
class Bundle:
    """One commit of the fleet folder, as the hosts receive it."""

    commit: str
    dirty: bool
    data: bytes

    @property
    def b64(self) -> str:
        return base64.b64encode(self.data).decode()


@dataclass
class HostResult:
    host: str
    outcome: str  # done, failed, unreachable, not attempted
    rc: int | None = None
    result: Any = None
    detail: str = ""
    rolled_back: list[str] = field(default_factory=list)
    elapsed: float | None = None  # seconds the agent took on the host (the rest is SSH/ansible)
    version: str | None = None  # the host's teredo-fleet, as its agent says
    needs_install: bool = False  # the agent refused: another teredo-fleet, or none, there
    upgraded: bool = False  # the controller's teredo-fleet was installed before this answer

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "outcome": self.outcome, "rc": self.rc,
                "detail": self.detail, "rolled_back": self.rolled_back,
                "agent_seconds": self.elapsed, "upgraded": self.upgraded}


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)


def make_bundle(fleet_dir: Path) -> Bundle:
    """HEAD's version of the fleet folder (hosts need no git and no credentials), and whether
    the working tree differs from it. Outside git: the folder as it is, named by its hash."""
    fleet_dir = fleet_dir.resolve()
    top = _git(fleet_dir, "rev-parse", "--show-toplevel")
    if top.returncode == 0:
        rel = fleet_dir.relative_to(Path(top.stdout.decode().strip()).resolve()).as_posix()
        head = _git(fleet_dir, "rev-parse", "--short=12", "HEAD")
        if head.returncode == 0:
            tree = f"HEAD:{rel}" if rel != "." else "HEAD"
            arch = _git(fleet_dir, "archive", "--format=tar.gz", tree)
            if arch.returncode != 0:
                raise MiredoctlError(f"{fleet_dir}: not committed yet (git archive {tree}: "
                                     f"{one_line(arch.stderr.decode())}); commit the fleet "
                                     "first: hosts receive a commit")
            dirty = bool(_git(fleet_dir, "status", "--porcelain", "--", ".").stdout.strip())
            return Bundle(head.stdout.decode().strip(), dirty, arch.stdout)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(fleet_dir.rglob("*")):
            if path.is_file() and not any(p.startswith(".") for p in
                                          path.relative_to(fleet_dir).parts):
                info = tar.gettarinfo(str(path), path.relative_to(fleet_dir).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:12]
    return Bundle(f"tree-{digest}", True, buf.getvalue())


PLAYBOOK = """\
- name: miredoctl
  hosts: all
  gather_facts: false
  serial: %(serial)s
  max_fail_percentage: %(max_fail)d
  tasks:
    - name: agent
      become: "{{ miredoctl_become | default((ansible_user | default('root')) != 'root') }}"
      ansible.builtin.command:
        argv: "{{ [miredoctl_python | default(miredoctl_root | default('%(root)s')
                   ~ '/venv/bin/python'), '-m', 'miredoctl.remote.agent',
                   '--host', inventory_hostname,
                   '--root', miredoctl_root | default('%(root)s'),
                   '--state-dir', miredoctl_state | default('%(state)s' ~ inventory_hostname)]
                   + miredoctl_args[inventory_hostname] }}"
        stdin: "{{ miredoctl_bundle }}"
      register: agent
      changed_when: false
      failed_when: agent.rc not in miredoctl_ok
"""


def ansible_playbook() -> str:
    """The ansible-playbook of the `remote` extra: next to this Python first (a venv)."""
    here = Path(sys.executable).with_name("ansible-playbook")
    found = str(here) if here.exists() else shutil.which("ansible-playbook")
    if not found:
        raise MiredoctlError("a fleet across hosts needs ansible-core: "
                             "pip install 'teredo-fleet[remote]'")
    return found


class Controller:
    """Runs one agent command on a set of hosts and returns one HostResult per host."""

    def __init__(self, fleet_dir: Path, state_dir: Path, hosts: HostsFile) -> None:
        self.fleet_dir = fleet_dir
        self.state_dir = state_dir
        self.hosts = hosts
        self._bundle: Bundle | None = None

    @property
    def bundle(self) -> Bundle:
        if self._bundle is None:
            self._bundle = make_bundle(self.fleet_dir)
        return self._bundle

    def ssh_options(self) -> list[str]:
        """The ssh options of every connection, through ansible or plain ssh alike: the
        fleet's known_hosts is the only one consulted, strictly; connections are reused."""
        known = self.fleet_dir.resolve() / KNOWN_HOSTS
        if not known.is_file():
            raise MiredoctlError(f"{known}: missing: host keys are pinned, put every host's "
                                 "key there (ssh-keyscan, checked out of band)")
        self.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        opts = ("ControlMaster=auto", f"ControlPersist={CONTROL_PERSIST}",
                f"UserKnownHostsFile={known}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", "UpdateHostKeys=no", "BatchMode=yes",
                "ConnectTimeout=5", "ServerAliveInterval=5", "ServerAliveCountMax=2")
        return [part for o in opts for part in ("-o", o)]

    @property
    def control_dir(self) -> Path:
        return self.state_dir / "ssh"

    def direct(self, hosts: list[str]) -> dict[str, sshdirect.Target] | None:
        """Plain-ssh targets for all of `hosts`, or None if one of them needs ansible."""
        if os.environ.get("MIREDOCTL_REMOTE_VIA") == "ansible":
            return None
        opts = self.ssh_options()
        out = {}
        for h in hosts:
            t = sshdirect.target(self.hosts.hosts[h], opts, self.control_dir,
                                 root_default=DEFAULT_ROOT, state_default=DEFAULT_STATE)
            if t is None:
                return None
            out[h] = t
        return out

    def _env(self, work: Path) -> dict[str, str]:
        ssh_args = " ".join(self.ssh_options())
        control = self.control_dir
        cfg = work / "ansible.cfg"
        cfg.write_text("[defaults]\n")  # no ansible.cfg of the current directory applies
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_CONFIG=str(cfg), ANSIBLE_SSH_ARGS=ssh_args, ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(control), ANSIBLE_PIPELINING="True",
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
            ANSIBLE_CALLBACK_TREE_DIR=str(work / "tree"), ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_PYTHON_INTERPRETER="auto_silent",
            ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_SYSTEM_WARNINGS="False",
            ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_FORKS=str(max(5, len(self.hosts.hosts))),
            ANSIBLE_LOCAL_TEMP=str(work / "tmp"), ANSIBLE_TIMEOUT="10",
            # modules log their arguments to the host's syslog by default: the fleet bundle
            # (base64, every run) has no place there
            ANSIBLE_NO_TARGET_SYSLOG="True")
        return env

    def run(self, args_by_host: dict[str, list[str]], *, ok_codes: tuple[int, ...] = (0,),
            serial: str = "100%", max_fail: int = 100) -> dict[str, HostResult]:
        """`_rolling`, then the version match: a host whose agent refused because it runs
        another teredo-fleet (or none) gets the controller's own installed (provision.py) and
        the command again, with the hosts a stopped roll left out; a host that cannot be
        upgraded stays refused, with the reason."""
        out = self._rolling(args_by_host, ok_codes=ok_codes, serial=serial, max_fail=max_fail)
        stale = [h for h, r in out.items() if r.needs_install]
        if not stale:
            return out
        from miredoctl.remote import provision
        setup = provision.upgrade(self, stale)
        for h in stale:
            if setup[h].outcome not in ("changed", "unchanged"):
                why = setup[h].detail or setup[h].outcome
                out[h].detail = f"{out[h].detail}; not upgraded: {why}"
        fixed = {h for h in stale if setup[h].outcome in ("changed", "unchanged")}
        # the hosts a roll left out because of a stale host go on only if every one was fixed
        again = [h for h in args_by_host if h in fixed or (
            out[h].outcome == "not attempted" and len(fixed) == len(stale))]
        if again:
            redo = self._rolling({h: args_by_host[h] for h in again}, ok_codes=ok_codes,
                                 serial=serial, max_fail=max_fail)
            for h, r in redo.items():
                if h in setup and setup[h].outcome == "changed":
                    r.upgraded = True
                out[h] = r
        return out

    def _rolling(self, args_by_host: dict[str, list[str]], *, ok_codes: tuple[int, ...],
                 serial: str, max_fail: int) -> dict[str, HostResult]:
        """`args_by_host`: the miredoctl arguments for each host (its own instance names).

        With `max_fail` 0 ansible's own rolling does it all in one run (`serial`,
        `max_fail_percentage: 0`). ansible-playbook ends the play when a whole batch failed,
        whatever `max_fail_percentage` says, so a tolerance above 0 is applied here, one
        ansible run per batch."""
        if max_fail == 0 or serial == "100%":
            return self._run(args_by_host, ok_codes=ok_codes, serial=serial, max_fail=max_fail)
        hosts = list(args_by_host)
        size = (max(1, -(-len(hosts) * int(serial[:-1]) // 100)) if serial.endswith("%")
                else int(serial))
        out: dict[str, HostResult] = {}
        stop = False
        for i in range(0, len(hosts), size):
            batch = hosts[i:i + size]
            if stop:
                out.update({h: HostResult(h, "not attempted") for h in batch})
                continue
            got = self._run({h: args_by_host[h] for h in batch}, ok_codes=ok_codes,
                            serial="100%", max_fail=100)
            out.update(got)
            failed = sum(1 for r in got.values() if r.outcome != "done")
            stop = failed * 100 > max_fail * len(batch)
        return out

    def _run(self, args_by_host: dict[str, list[str]], *, ok_codes: tuple[int, ...],
             serial: str, max_fail: int) -> dict[str, HostResult]:
        remote = [h for h in args_by_host if h != LOCAL]
        out: dict[str, HostResult] = {}
        if LOCAL in args_by_host:
            out[LOCAL] = self._run_local(args_by_host[LOCAL], ok_codes)
        if not remote:
            return out
        b = self.bundle
        common = ["--commit", b.commit, "--expect", schema.identity(),
                  "--install", schema.install_id(),
                  *(["--dirty"] if b.dirty else []), "--"]
        args = {h: [*common, *args_by_host[h]] for h in remote}
        if all(args_by_host[h][:1] and args_by_host[h][0] in DIRECT for h in remote):
            targets = self.direct(remote)
            if targets is not None:
                answers = sshdirect.run_all(targets, args, b.b64)
                done = subprocess.CompletedProcess([], 0)
                for host in remote:
                    out[host] = self._judge(host, answers[host], ok_codes, done)
                return out
        play = PLAYBOOK % {"root": DEFAULT_ROOT, "state": DEFAULT_STATE,
                           "serial": json.dumps(serial), "max_fail": max_fail}
        answers, proc = self.play(play, {"miredoctl_args": args, "miredoctl_ok": list(ok_codes),
                                         "miredoctl_bundle": b.b64}, remote)
        for host in remote:
            out[host] = self._judge(host, answers[host], ok_codes, proc)
        return out

    def play(self, play: str, extra_vars: dict[str, Any], hosts: list[str]
             ) -> tuple[dict[str, dict[str, Any] | None], subprocess.CompletedProcess[str]]:
        """Run one generated playbook on `hosts`; each host's last task result (ansible-core's
        `tree` callback), None for a host the play never reached."""
        with tempfile.TemporaryDirectory(prefix="miredoctl-remote-") as tmp:
            work = Path(tmp)
            (work / "play.yml").write_text(play)
            (work / "vars.json").write_text(json.dumps(extra_vars))
            argv = [ansible_playbook(), "-i", str(self.hosts.path), "--limit", ",".join(hosts),
                    "-e", f"@{work / 'vars.json'}", str(work / "play.yml")]
            proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(work),
                                  stdin=subprocess.DEVNULL, timeout=1800)
            answers: dict[str, dict[str, Any] | None] = {}
            for host in hosts:
                try:
                    answers[host] = json.loads((work / "tree" / host).read_text())
                except FileNotFoundError:
                    answers[host] = None
                except ValueError:
                    answers[host] = {"failed": True, "msg": "unreadable ansible result"}
        return answers, proc

    def _judge(self, host: str, res: dict[str, Any] | None, ok_codes: tuple[int, ...],
               proc: subprocess.CompletedProcess[str]) -> HostResult:
        if res is None:
            # ansible-playbook's exit code is bit flags: 2 some host failed, 4 some host
            # unreachable; the play stopped before this host. Anything else is ansible's own
            # failure (a parse error, bad options), to be said as it is
            if proc.returncode not in (0, 2, 4, 6):
                return HostResult(host, "failed", None, None,
                                  "ansible-playbook: " + _last_error(proc))
            return HostResult(host, "not attempted")
        if res.get("unreachable"):
            return HostResult(host, "unreachable", None, None, _ssh_error(res.get("msg", "")))
        envelope = _envelope(res.get("stdout", ""))
        if envelope is None:
            err = (res.get("stderr") or res.get("module_stderr") or "").strip().splitlines()
            why = err[-1] if err else res.get("msg") or "no answer"
            # no teredo-fleet on the host yet: no miredoctl module, or no venv at all
            absent = bool(re.search(r"No module named '?miredoctl|No such file or directory",
                                    str(why)))
            return HostResult(host, "failed", res.get("rc"), None,
                              f"agent did not answer (exit {res.get('rc')}): "
                              f"{one_line(str(why))[:300]}", needs_install=absent)
        if envelope.get("schema") != schema.SCHEMA:
            return HostResult(host, "failed", None, None,
                              f"agent speaks schema {envelope.get('schema')}, this controller "
                              f"{schema.SCHEMA}: refused")
        rc = envelope.get("rc")
        detail = one_line(envelope.get("stderr") or "")
        version = envelope.get("identity")
        if rc == schema.EXIT_VERSION:
            return HostResult(host, "failed", rc, None, f"version mismatch: {detail}; refused",
                              version=version, needs_install=True)
        outcome = "done" if rc in ok_codes else "failed"
        return HostResult(host, outcome, rc, envelope.get("result"), detail,
                          list(envelope.get("rolled_back") or []), envelope.get("elapsed"),
                          version)

    def _run_local(self, agent_args: list[str], ok_codes: tuple[int, ...]) -> HostResult:
        """Instances without `host:` run here, from the working tree, as without hosts.yaml."""
        from miredoctl.remote.agent import _inner
        env = dict(os.environ, MIREDOCTL_THIS_HOST="")
        rc, result, errors = _inner(self.fleet_dir, self.state_dir, agent_args, env)
        return HostResult(LOCAL, "done" if rc in ok_codes else "failed", rc, result,
                          one_line(errors), version=schema.identity())


def _envelope(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _ssh_error(msg: str) -> str:
    """ssh's own complaint, one line: the known_hosts verdict or the connect error."""
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    for pattern in ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed",
                    "No .* host key is known", "Permission denied", "Connection refused",
                    "timed out", "No route to host"):
        for ln in lines:
            if re.search(pattern, ln):
                if "IDENTIFICATION HAS CHANGED" in ln:
                    return "host key CHANGED (not the key pinned in known_hosts): refused"
                if re.search("No .* host key is known|Host key verification failed", ln):
                    return f"host key not pinned or not matching known_hosts: {ln}"
                return ln
    return one_line(str(msg))[:300] or "unreachable"


def _last_error(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    errs = [ln for ln in text if "ERROR" in ln] or text[-1:]
    return one_line(errs[-1] if errs else f"exit {proc.returncode}")[:300]


def parse_serial(text: str | None) -> str:
    if text is None:
        return "1"
    if re.fullmatch(r"[1-9][0-9]*|([1-9][0-9]?|100)%", text):
        return text
    raise UsageError(f"--serial {text!r}: a number of hosts or a percentage (e.g. 2 or 50%)")


def parse_percent(text: str | None) -> int:
    if text is None:
        return 0
    m = re.fullmatch(r"([0-9]{1,2}|100)%?", text)
    if not m:
        raise UsageError(f"--max-fail {text!r}: a percentage 0-100 (e.g. 25%)")
    return int(m.group(1))
