"""`miredoctl service install|uninstall|status`: a systemd unit that brings a fleet up at boot.

Why `Type=forking` around `miredoctl up --all` rather than supervisord in the foreground:
at boot /run is empty, and only `up` knows how to get from the inventory to a running fleet
(validate, render, create the runtime folder, start supervisord, wait for every engine, adopt
or stop engines a dead supervisord left). `up` returns once supervisord (which daemonizes) runs
every engine; systemd then follows supervisord through its pid file, so `Restart=on-failure`
acts when supervisord dies. `reload --all` and `down --all` are the reload and stop actions,
so the unit changes the fleet exactly as an operator would (docs/miredoctl.md, "Boot, service
and layout").

Hardening: nothing that takes away what engines need (TUN devices, netlink, network
namespaces, raw ICMPv6 sockets, dropping to a worker user): no PrivateNetwork, PrivateDevices
or RestrictAddressFamilies. ProtectSystem=full keeps /usr, /boot and /etc read-only,
ProtectHome=read-only lets a fleet folder live in a home, PrivateTmp hides /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from miredoctl import fleets
from miredoctl.errors import EXIT_NOT_RUNNING, EXIT_OK, MiredoctlError
from miredoctl.state import (
    DEFAULT_LIB_BASE,
    DEFAULT_LOG_BASE,
    DEFAULT_STATE_BASE,
    StatePaths,
    state_error,
    write_atomic,
)

if TYPE_CHECKING:
    from miredoctl.ops import Context

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(3): systemd is PID 1 when it exists
START_TIMEOUT = 300  # as the fleet lock's wait: the slowest `up` starts hundreds of engines


def unit_name(name: str) -> str:
    return f"miredoctl-{name}.service"


def unit_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "unit_dir", None) or os.environ.get("MIREDOCTL_UNIT_DIR")
                or DEFAULT_UNIT_DIR)


def miredoctl_argv() -> list[str]:
    """This miredoctl: the script next to the interpreter (a virtualenv's), else `-m`."""
    script = Path(sys.executable).parent / "miredoctl"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "miredoctl.cli"]


def _quote(arg: str) -> str:
    """One argument of an Exec line: systemd's own quoting is close to the shell's, and '%'
    and '$' are its specifiers and variables, so they are doubled."""
    return shlex.quote(arg.replace("%", "%%").replace("$", "$$"))


def fleet_argv(fleet_dir: Path, paths: StatePaths) -> list[str]:
    """miredoctl with this fleet's folder, name and (when not the defaults) its folders."""
    argv = [*miredoctl_argv(), "--fleet", str(Path(fleet_dir).resolve())]
    if paths.single:
        return [*argv, "--state-dir", str(paths.root)]
    # systemd starts the unit without this shell's environment: a folder that is not the
    # built-in default is written out
    argv += ["--project", paths.name]
    if paths.root != DEFAULT_STATE_BASE / paths.name:
        argv += ["--run-dir", str(paths.root)]
    if paths.lib_root != DEFAULT_LIB_BASE / paths.name:
        argv += ["--lib-dir", str(paths.lib_root)]
    if paths.logs != DEFAULT_LOG_BASE / paths.name:
        argv += ["--log-dir", str(paths.logs)]
    return argv


def unit_paths(fleet_dir: Path, paths: StatePaths) -> StatePaths:
    """The folders the unit will use: the named layout even while an old hash-named folder
    is adopted (the unit starts the fleet after a reboot, when that folder is gone)."""
    if paths.single and paths.root.name == fleets.fleet_hash(fleet_dir):
        return fleets.fleet_paths(fleet_dir, project=paths.name or None, adopt=False)
    return paths


def render_unit(fleet_dir: Path, paths: StatePaths) -> str:
    paths = unit_paths(fleet_dir, paths)
    cmd = " ".join(_quote(a) for a in fleet_argv(fleet_dir, paths))
    folder = str(Path(fleet_dir).resolve())
    writable = " ".join(_quote(f"-{p}") for p in dict.fromkeys(
        (paths.root, paths.lib_root, paths.logs)))
    return "\n".join([
        f"# written by `miredoctl service install` for the fleet {paths.name or folder};",
        "# regenerate with it rather than editing (docs/miredoctl.md, \"Boot, service and "
        "layout\")",
        "[Unit]",
        f"Description=Teredo fleet {paths.name} (miredoctl, {folder})",
        "Wants=network-online.target",
        "After=network-online.target",
        f"RequiresMountsFor={_quote(folder)}",
        "",
        "[Service]",
        "Type=forking",
        f"PIDFile={_quote(str(paths.supervisord_pid))}",
        f"ExecStart={cmd} up --all",
        f"ExecReload={cmd} reload --all",
        f"ExecStop={cmd} down --all",
        "Restart=on-failure",
        "RestartSec=5",
        f"TimeoutStartSec={START_TIMEOUT}",
        f"TimeoutStopSec={START_TIMEOUT}",
        "Environment=PYTHONUNBUFFERED=1",
        "ProtectSystem=full",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        f"ReadWritePaths={writable}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def systemd_running() -> bool:
    return SYSTEMD_RUNNING.is_dir()


def _systemctl(*args: str) -> None:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MiredoctlError(f"systemctl {' '.join(args)} failed: "
                             f"{(proc.stderr or proc.stdout).strip() or proc.returncode}")


def _systemctl_word(*args: str) -> str:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def install(fleet_dir: Path, paths: StatePaths, where: Path) -> list[str]:
    """Write the unit (and the persistent folders it names); enable it when systemd runs."""
    unit = where / unit_name(paths.name)
    text = render_unit(fleet_dir, paths)
    try:
        where.mkdir(parents=True, exist_ok=True)
        changed = write_atomic(unit, text, 0o644)
        folders = unit_paths(fleet_dir, paths)
        for folder in (folders.lib_root, folders.logs):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise state_error(exc) from exc
    said = [f"{unit}: {'written' if changed else 'unchanged'}"]
    if systemd_running():
        _systemctl("daemon-reload")
        _systemctl("enable", unit.name)
        said.append(f"enabled {unit.name}: the fleet starts at boot; `systemctl start "
                    f"{unit.name}` starts it now")
    else:
        said.append(f"systemd is not running here ({SYSTEMD_RUNNING} is missing): run "
                    f"`systemctl daemon-reload && systemctl enable {unit.name}` on the host "
                    "that boots with it")
    return said


def uninstall(paths: StatePaths, where: Path) -> list[str]:
    """Disable and remove the unit; the fleet itself keeps running (`down` stops it)."""
    unit = where / unit_name(paths.name)
    if not unit.exists():
        return [f"{unit}: not installed"]
    said = []
    if systemd_running():
        _systemctl("disable", unit.name)
        said.append(f"disabled {unit.name}")
    try:
        unit.unlink()
    except OSError as exc:
        raise state_error(exc, unit) from exc
    said.append(f"{unit}: removed (the fleet keeps running; `miredoctl down --all` stops it)")
    if systemd_running():
        _systemctl("daemon-reload")
    return said


def status(fleet_dir: Path, paths: StatePaths, where: Path) -> dict[str, object]:
    unit = where / unit_name(paths.name)
    try:
        current = unit.read_text()
    except OSError:
        current = None
    data: dict[str, object] = {
        "unit": str(unit), "installed": current is not None,
        "up_to_date": current == render_unit(fleet_dir, paths) if current is not None else None,
        "systemd": systemd_running(), "active": None, "enabled": None}
    if current is not None and systemd_running():
        data["active"] = _systemctl_word("is-active", unit.name)
        data["enabled"] = _systemctl_word("is-enabled", unit.name)
    return data


def cmd_service(args: argparse.Namespace, ctx: Context) -> int:
    fleet_dir, paths = ctx.fleet_dir, ctx.paths
    where = unit_dir(args)
    if args.action == "install":
        lines = install(fleet_dir, paths, where)
    elif args.action == "uninstall":
        lines = uninstall(paths, where)
    else:
        data = status(fleet_dir, paths, where)
        if args.json:
            print(json.dumps(data, indent=2, sort_keys=True))
        else:
            state = ("not installed" if not data["installed"] else
                     "installed" + ("" if data["up_to_date"] else
                                    " (differs from what `service install` writes now)"))
            extra = (f"; {data['active']}, {data['enabled']}" if data["systemd"] and
                     data["installed"] else "" if data["systemd"] else
                     "; systemd is not running here")
            print(f"{data['unit']}: {state}{extra}")
        return EXIT_OK if data["installed"] else EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({"messages": lines}, indent=2))
    else:
        print("\n".join(lines))
    return EXIT_OK
