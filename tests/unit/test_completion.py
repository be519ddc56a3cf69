"""Shell completion from `miredoctl completion bash|zsh`: commands, options, choices and
instance names, driven through the real shells (bash's programmable completion variables;
zsh's compdef registration and the instance-name function)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BASH_DRIVER = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
_shtab_miredoctl miredoctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def _script(tmp_path: Path, shell: str) -> Path:
    out = subprocess.run([sys.executable, "-m", "miredoctl.cli", "completion", shell],
                         capture_output=True, text=True, check=True, cwd=tmp_path,
                         timeout=60).stdout
    path = tmp_path / f"miredoctl.{shell}"
    path.write_text(out)
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    folder = tmp_path / "myfleet"
    folder.mkdir()
    for name in ("defaults.yaml", "hosts.yaml", "edge-a.yaml", "edge-b.yml", "core.yaml"):
        (folder / name).write_text("")
    (folder / "notes.txt").write_text("")
    return folder


def _bash(script: Path, *words: str, fleet_env: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "MIREDOCTL_FLEET"}
    if fleet_env:
        env["MIREDOCTL_FLEET"] = fleet_env
    proc = subprocess.run(["bash", "-c", BASH_DRIVER, "driver", str(script), *words],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())


def test_bash_completes_commands_options_choices_and_names(tmp_path: Path, fleet: Path) -> None:
    script = _script(tmp_path, "bash")
    assert _bash(script, "miredoctl", "st") == ["status"]
    assert _bash(script, "miredoctl", "up", "--re") == ["--remove-orphans", "--require-clean"]
    assert _bash(script, "miredoctl", "status", "--role", "") == ["client", "relay", "server"]
    assert _bash(script, "miredoctl", "completion", "") == ["bash", "zsh"]
    # instance names: the fleet's instance files, from --fleet, else MIREDOCTL_FLEET
    assert _bash(script, "miredoctl", "--fleet", str(fleet), "restart", "") == \
        ["core", "edge-a", "edge-b"]
    assert _bash(script, "miredoctl", "logs", "ed", fleet_env=str(fleet)) == \
        ["edge-a", "edge-b"]
    assert _bash(script, "miredoctl", "--fleet", str(tmp_path / "none"), "show", "") == []


def test_zsh_registers_and_lists_instance_names(tmp_path: Path, fleet: Path) -> None:
    assert shutil.which("zsh"), "zsh is in the Makefile's APT_PACKAGES"
    script = _script(tmp_path, "zsh")
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    program = (
        'autoload -U compinit; compinit -u -D; eval "$(<$1)"; print -r -- ${_comps[miredoctl]};'
        "compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} };"
        'words=(miredoctl --fleet "$2" restart ""); _miredoctl_instances;'
        'MIREDOCTL_FLEET=$2; words=(miredoctl logs ""); _miredoctl_instances')
    proc = subprocess.run(["zsh", "-f", "-c", program, "zsh", str(script), str(fleet)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "_shtab_miredoctl"
    assert lines[1:] == ["core", "edge-a", "edge-b"] * 2
