"""Issue 10, item 1: no inventory value can add a line, a section or an option to what
miredoctl renders.

Every field is set to every class of hostile value. Each value is either refused with a one-line
`file:line: message`, or it is rendered, and then the rendered files are read back with the
readers that will really consume them: supervisord's own config parser (`ServerOptions`, the
code `reloadConfig` runs) and the engine's (`engine.config.parse_config`). Nothing extra may
appear there: no section, no option, no directive, no argument.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from supervisor.options import ServerOptions, UnhosedConfigParser

from engine.config import parse_config
from miredoctl.errors import InventoryError
from miredoctl.inventory import FIELDS, load_fleet
from miredoctl.render import (
    HEALER,
    LOGSTAMP,
    PROGRAM_SETTINGS,
    REAPER,
    render_fleet,
    supervisord_conf,
)
from miredoctl.state import StatePaths

# every class of hostile value: line breaks of each kind, INI syntax (sections, options,
# comments, interpolation), shell syntax, option-looking words
HOSTILE: dict[str, str] = {
    "newline-section": "nobody\n[program:evil]\ncommand=touch /tmp/pwned ;",
    "trailing-newline": "nobody\n",
    "carriage-return": "x\rPrefix 2001:db8::",
    "nul": "x\x00y",
    "esc": "x\x1b[2Jy",
    "del": "x\x7fy",
    "tab": "x\ty",
    "nel": "x\x85y",
    "line-separator": "x\u2028InterfaceName evil",
    "paragraph-separator": "x\u2029y",
    "vertical-tab": "x\x0by",
    "form-feed": "x\x0cy",
    "inline-comment": "x ;comment",
    "hash-comment": "x #comment",
    "leading-hash": "#x",
    "interpolation": "%(here)s",
    "env-interpolation": "%(ENV_HOME)s",
    "quotes": "it's \"q\"",
    "quotes-one-word": "it's\"q\"",
    "dash-option": "-x",
    "space": "a b",
    "option-syntax": "a=b",
    "section-syntax": "[program:evil]",
    "long": "x" * 5000,
}

BASE = {
    "client": "role: client\nserver: 203.0.113.10\n",
    "relay": "role: relay\n",
    "server": "role: server\nserver_bind_address: 203.0.113.10\n",
}
DEFAULTS = "allow_documentation_addresses: true\n"
LOCATED = re.compile(r"^\S[^\n]*:\d+: \S[^\n]*$")


def _instance_text(role: str, key: str, value: object) -> str:
    lines = [line for line in BASE[role].splitlines() if not line.startswith(f"{key}:")]
    if key == "role":
        lines = [ln for ln in lines if not ln.startswith("role:")]
    return "\n".join([*lines, f"{key}: {json.dumps(value)}"]) + "\n"


def _role_for(key: str) -> str:
    return sorted(FIELDS[key].roles)[0]


def _check_refusal(exc: InventoryError, fleet: Path) -> None:
    for problem in exc.problems:
        text = str(problem)
        assert "\n" not in text and "\r" not in text
        assert LOCATED.match(text), text
        assert str(fleet) in text or "c1.yaml" in text, text


def _supervisord_view(paths: StatePaths, name: str) -> tuple[set[str], list[str], set[str]]:
    """(process group names, the instance's argv, its program options) as supervisord sees
    them: the whole config through ServerOptions, and the program file through the same
    INI parser."""
    options = ServerOptions()
    options.configfile = str(paths.supervisord_conf)
    options.process_config_file(do_usage=False)
    groups = options.configroot.supervisord.process_group_configs
    names = {g.name for g in groups}
    (proc,) = [p for g in groups if g.name == name for p in g.process_configs]
    parser = UnhosedConfigParser()
    parser.read(str(paths.program(name)))
    assert parser.sections() == [f"program:{name}"]
    return names, shlex.split(proc.command), set(parser.options(f"program:{name}"))


def _render_and_read_back(fleet_dir: Path, state: Path, key: str, value: object) -> None:
    fleet = load_fleet(fleet_dir)
    paths = StatePaths(state)
    paths.ensure()
    rendered = render_fleet(fleet, paths)
    (r,) = rendered.values()
    # supervisord: exactly our sections, exactly our options, exactly our argv
    paths.supervisord_conf.write_text(supervisord_conf(paths, "test"))
    for stale in paths.programs.glob("*.conf"):
        stale.unlink()
    paths.program(r.name).write_text(r.program)
    groups, argv, options = _supervisord_view(paths, r.name)
    assert groups == {REAPER, LOGSTAMP, HEALER, r.name}
    assert argv == r.command
    assert options == {"command", "directory", "priority", "stdout_logfile", "environment",
                       *PROGRAM_SETTINGS}
    # the engine: exactly the directives the inventory set, each value exactly as given
    config = parse_config(r.text, "rendered.conf", resolver=lambda _host: "203.0.113.10")
    # `role` and `relay_type` both become RelayType, which a server's file does not have
    directives = {FIELDS[k].directive for k in r.inst.values
                  if FIELDS[k].directive and k not in ("role", "relay_type")}
    if r.inst.role != "server":
        directives.add("RelayType")
    assert set(config.lines) == directives, (key, value, r.text)
    for line in r.body.splitlines():
        words = line.split()
        assert len(words) <= 2 or words[0].startswith("#"), line
    if FIELDS[key].directive and isinstance(value, str) and key != "role":
        assert f"{FIELDS[key].directive} {value}\n" in r.body


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_every_field_with_every_hostile_value(tmp_path: Path, key: str) -> None:
    role = _role_for(key)
    refused = accepted = 0
    for label, hostile in HOSTILE.items():
        d = tmp_path / label / "fleet"
        d.mkdir(parents=True)
        (d / "defaults.yaml").write_text(DEFAULTS)
        value: object = [hostile] if key == "tags" else hostile
        (d / "c1.yaml").write_text(_instance_text(role, key, value))
        try:
            _render_and_read_back(d, tmp_path / label / "state", key, value)
            accepted += 1
        except InventoryError as exc:
            _check_refusal(exc, d)
            refused += 1
    # every value with a line-breaking character is refused, whatever the field
    assert refused >= 12


@pytest.mark.parametrize("label", ["inline-comment", "hash-comment", "interpolation",
                                   "env-interpolation", "quotes", "quotes-one-word",
                                   "option-syntax",
                                   "section-syntax", "leading-hash", "space"])
def test_chroot_paths_that_exist_are_quoted_for_supervisord(tmp_path: Path, label: str) -> None:
    """A chroot is the one free-form value that reaches the command line; a directory with INI
    or shell syntax in its name must come back as the same single argument."""
    chroot = tmp_path / "jail" / HOSTILE[label]
    chroot.mkdir(parents=True)
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "c1.yaml").write_text(BASE["client"] + f"chroot: {json.dumps(str(chroot))}\n")
    _render_and_read_back(d, tmp_path / "state", "chroot", str(chroot))
    r = render_fleet(load_fleet(d), StatePaths(tmp_path / "state"))["c1"]
    assert r.command[-2:] == ["-t", str(chroot)]


@pytest.mark.parametrize("label", ["interpolation", "quotes-one-word", "option-syntax",
                                   "section-syntax", "dash-option"])
def test_discovery_interfaces_words_reach_the_engine_unchanged(tmp_path: Path,
                                                                label: str) -> None:
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "c1.yaml").write_text(BASE["client"] + "discovery_interfaces: "
                               f"{json.dumps(HOSTILE[label])}\n")
    _render_and_read_back(d, tmp_path / "state", "discovery_interfaces", HOSTILE[label])


def _problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    d = tmp_path / "fleet"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    with pytest.raises(InventoryError) as exc:
        load_fleet(d)
    out = [str(p).replace(f"{d}/", "") for p in exc.value.problems]
    for line in out:
        assert "\n" not in line
    return out


def test_the_injection_of_the_issue_is_refused_at_its_line(tmp_path: Path) -> None:
    got = _problems(tmp_path, {"c1.yaml": BASE["client"] + 'user: "nobody\\n[program:evil]\\n'
                                                          'command=touch pwned ;"\n'})
    assert len(got) == 1 and got[0].startswith("c1.yaml:3: user must not contain control "
                                               "characters, got newline (U+000A)")


def test_a_yaml_block_scalar_user_is_refused(tmp_path: Path) -> None:
    got = _problems(tmp_path, {"c1.yaml": BASE["client"] + "user: |\n  nobody\n"})
    assert len(got) == 1 and got[0].startswith("c1.yaml:3: user must not contain control")


@pytest.mark.parametrize(("text", "message"), [
    ("user: root\n", "c1.yaml:3: user must not be root (uid 0)"),
    ("user: no-such-user-here\n", "c1.yaml:3: user names no user on this machine"),
    ("user: -x\n", "c1.yaml:3: user must be a user name"),
    ("chroot: /\n", "c1.yaml:3: chroot must not be the root directory"),
    ("chroot: /tmp/..\n", "c1.yaml:3: chroot must not be the root directory"),
    ("chroot: //\n", "c1.yaml:3: chroot must not be the root directory"),
    ("chroot: /no/such/dir\n", "c1.yaml:3: chroot must be an existing directory"),
    ("netns: .\n", "c1.yaml:3: netns must be a network namespace name"),
    ("netns: ..\n", "c1.yaml:3: netns must be a network namespace name"),
    ("netns: a/b\n", "c1.yaml:3: netns must be a network namespace name"),
    ("netns: -n\n", "c1.yaml:3: netns must be a network namespace name"),
    ("netns: " + "n" * 65 + "\n", "c1.yaml:3: netns must be a network namespace name"),
    ('netns: "ns\\n"\n', "c1.yaml:3: netns must not contain control characters"),
    ('interface: "teredo\\n"\n', "c1.yaml:3: interface must not contain control characters"),
    ('server2: "teredo.example.net\\n"\n',
     "c1.yaml:3: server2 must not contain control characters"),
    ("discovery_interfaces: a b\n", "c1.yaml:3: discovery_interfaces must be one word"),
    ('tags: ["a\\u001bb"]\n', "c1.yaml:3: tags must not contain control characters"),
])
def test_values_that_make_no_sense_are_refused(tmp_path: Path, text: str, message: str) -> None:
    got = _problems(tmp_path, {"c1.yaml": BASE["client"] + text})
    assert len(got) == 1 and got[0].startswith(message), got


def test_prefix_with_a_scope_id_is_refused(tmp_path: Path) -> None:
    got = _problems(tmp_path, {"r1.yaml": 'role: relay\nprefix: "2001::%x"\n'})
    assert got == ["r1.yaml:2: prefix must be an IPv6 prefix such as 2001:0::, got string "
                   "'2001::%x'"]


def test_a_file_name_with_a_trailing_newline_is_not_an_instance(tmp_path: Path) -> None:
    got = _problems(tmp_path, {"c3\n.yaml": BASE["client"]})
    assert got == ["c3\\u000a.yaml: instance file names must be lower-case letters, digits, "
                   "'-' or '_' (at most 32, starting with a letter or digit)"]


def test_a_hostile_key_cannot_split_the_message(tmp_path: Path) -> None:
    got = _problems(tmp_path, {"c1.yaml": BASE["client"] + '"x\\ny": 1\n'})
    assert got == ["c1.yaml:3: unknown key 'x\\u000ay'"]


def test_a_valid_user_and_chroot_still_render(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "c1.yaml").write_text(BASE["client"] + f"user: nobody\nchroot: {jail}\n")
    _render_and_read_back(d, tmp_path / "state", "user", "nobody")
