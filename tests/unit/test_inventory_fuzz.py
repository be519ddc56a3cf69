"""Issue 10, item 5: a bounded inventory fuzzer for `miredoctl validate`.

Seeded random mutations of the shipped `instances/` files (bytes, lines, keys, values, file
names), each run through `miredoctl validate` in-process exactly as the CLI runs it. A case fails
on any "internal error", any stderr line without a location (`file:line: message` or
`path: message`, plus the one summary line), an exit code other than 0 or 1, or a run longer
than 10 s. Deterministic: the seed of a failing case is in the assertion message, and
MIREDOCTL_FUZZ_CASES / MIREDOCTL_FUZZ_SEED run more or other cases.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from miredoctl import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {p.name: p.read_bytes() for p in sorted((ROOT / "instances").glob("*.yaml"))}
CASES = int(os.environ.get("MIREDOCTL_FUZZ_CASES", "300"))
SEED = int(os.environ.get("MIREDOCTL_FUZZ_SEED", "20261202"))
HANG = 10  # seconds
SUMMARY = re.compile(r"^miredoctl: \d+ problem\(s\); nothing was changed$")

KEYS = [b"role", b"engine", b"enabled", b"tags", b"netns", b"server", b"server2",
        b"relay_type", b"interface", b"bind_address", b"bind_port", b"prefix", b"mtu",
        b"local_discovery", b"discovery_interfaces", b"discovery_netmask", b"syslog_facility",
        b"user", b"chroot", b"server_bind_address", b"server_bind_address2", b"all", b"roles",
        b"allow_documentation_addresses", b"client", b"relay", b"<<", b"? x"]
VALUES = [b"null", b"~", b"", b"255.255.255.255", b"0.0.0.0", b"!!python/object/apply:os.system "
          b"['true']", b"!!python/name:os.system", b"1e999", b"-1", b"99999999999999999999",
          b"[]", b"{}", b"yes", b"0x10", b"2001-02-30", b"&a x", b"*a", b"*nowhere",
          b"[" * 5000 + b"]" * 5000, b"x" * 70000, b"!!binary AAAA", b"!!set {a}",
          b"!!timestamp x", b"!!int x", b"!!float .nan", b".inf", b"-.inf", b"|\n  nobody",
          b">\n  x\n  y", b'"nobody\\n[program:evil]\\ncommand=touch pwned"', b"root", b"/",
          b"..", b".", b"'%(here)s'", b"' ;x'", b"2001::%x", b"2001:db8::/48", b"ff02::",
          b"teredo\\n", b'"\\x00"', b'"\\e"', b'"\\u2028"', b"- a\n- b", b"{a: [b, {c: d}]}",
          b"9" * 5000, b"!!str", b"!<tag:yaml.org,2002:python/none> x", b"%YAML 1.1"]
BYTES = [b"\x00", b"\x1b", b"\x7f", b"\n", b"\r", b"\t", b"\x85", "\u2028".encode(),
         "é".encode(), b"\xff", b"\xfe\xff", b":", b"-", b"[", b"]", b"{", b"}", b"&", b"*",
         b"!", b"|", b">", b"%", b"#", b'"', b"'", b" ", b"  ", b"\n  ", b",", b"?", b"@", b"`"]
NAMES = ["c3\n.yaml", "C1.yaml", "a b.yaml", "-x.yaml", "x" * 40 + ".yaml", "defaults.yml",
         ".hidden.yaml", "é.yaml", "dup.yml", "dup.yaml", "\x1b.yaml"]


def _mutate(rng: random.Random, files: dict[str, bytes]) -> dict[str, bytes]:
    files = dict(files)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(sorted(files))
        data = files[name]
        lines = data.split(b"\n")
        kind = rng.randrange(9)
        at = rng.randrange(len(data) + 1)
        if kind == 0:  # a hostile byte anywhere
            data = data[:at] + rng.choice(BYTES) + data[at:]
        elif kind == 1:  # a span removed
            data = data[:at] + data[at + rng.randint(1, 40):]
        elif kind == 2:  # a value replaced
            i = rng.randrange(len(lines))
            key = lines[i].split(b":", 1)[0] if b":" in lines[i] else rng.choice(KEYS)
            lines[i] = key + b": " + rng.choice(VALUES)
            data = b"\n".join(lines)
        elif kind == 3:  # a key renamed
            i = rng.randrange(len(lines))
            if b":" in lines[i]:
                indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
                lines[i] = indent + rng.choice(KEYS) + b":" + lines[i].split(b":", 1)[1]
            data = b"\n".join(lines)
        elif kind == 4:  # a line duplicated or moved
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines.insert(j, lines[i])
            data = b"\n".join(lines)
        elif kind == 5:  # a new key at some indentation
            lines.insert(rng.randrange(len(lines) + 1), b"  " * rng.randint(0, 2)
                         + rng.choice(KEYS) + b": " + rng.choice(VALUES))
            data = b"\n".join(lines)
        elif kind == 6:  # random bytes
            data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) \
                + data[at:]
        elif kind == 7:  # an odd file name
            files[rng.choice(NAMES)] = data
        else:  # the file emptied or cut
            data = data[:at]
        files[name] = data
    return files


class Hang(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang


def _validate(fleet: Path, state: Path) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--fleet", str(fleet), "--state-dir", str(state), "validate"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


def _bad_lines(stderr: str, fleet: Path) -> list[str]:
    bad = []
    for line in stderr.splitlines():
        if SUMMARY.match(line):
            continue
        # display_path: relative to the cwd when below it, else absolute
        if not (line.startswith(f"{fleet}/") or line.startswith(f"{fleet}:")):
            bad.append(line)
    return bad


def test_shipped_fleet_validates(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name, data in SHIPPED.items():
        (fleet / name).write_bytes(data)
    code, out, err, _ = _validate(fleet, tmp_path / "state")
    assert (code, err) == (0, ""), err
    assert out.startswith("ok: 4 instances valid")


def test_mutated_inventories_never_give_an_internal_error(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    outcomes = {"ok": 0, "refused": 0}
    slowest = 0.0
    failures = []
    for case in range(CASES):
        seed = rng.randrange(2**32)
        files = _mutate(random.Random(seed), SHIPPED)
        fleet = tmp_path / f"c{case}" / "fleet"
        fleet.mkdir(parents=True)
        for name, data in files.items():
            with contextlib.suppress(OSError):  # a name the file system refuses
                (fleet / name).write_bytes(data)
        try:
            code, _out, err, took = _validate(fleet, tmp_path / f"c{case}" / "state")
        except Hang:
            failures.append(f"seed {seed}: no answer within {HANG} s")
            continue
        slowest = max(slowest, took)
        bad = _bad_lines(err, fleet)
        if "internal error" in err or bad or code not in (0, 1):
            failures.append(f"seed {seed}: exit {code}: {(bad or err.splitlines())[:3]}")
        outcomes["ok" if code == 0 else "refused"] += 1
    print(f"fuzzed {CASES} inventories (seed {SEED}): {outcomes}, slowest {slowest:.1f} s")
    assert not failures, "\n".join(failures[:20])
    assert outcomes["refused"] > CASES // 2  # the mutations do reach the error paths


@pytest.mark.parametrize(("text", "message"), [
    (b"role: client\nserver: 203.0.113.10\n\x00\n",
     "c1.yaml:3: YAML syntax error: character NUL (U+0000) is not allowed in a YAML file"),
    (b"role: client\nserver: 203.0.113.10\ntags: ['\x1b']\n",
     "c1.yaml:3: YAML syntax error: character ESC (U+001B) is not allowed in a YAML file"),
    (b"role: client\n\x7f\n",
     "c1.yaml:2: YAML syntax error: character DEL (U+007F) is not allowed in a YAML file"),
    (b"role: client\nserver: 203.0.113.10\ntags: " + b"[" * 5000 + b"]" * 5000 + b"\n",
     "c1.yaml:3: YAML nesting deeper than 64 levels"),
    (b"role: server\nserver_bind_address: 255.255.255.255\n",
     "c1.yaml:2: server_bind_address 255.255.255.255 has no next address for the secondary; "
     "set server_bind_address2"),
    (b"role: client\nserver: !!python/object/apply:os.system ['true']\n",
     "c1.yaml:2: bad YAML value: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    (b"role: client\nserver: 203.0.113.10\nbind_port: 2001-02-30\n",
     "c1.yaml:3: bad YAML value: day is out of range for month"),
    (b"role: client\nserver: 203.0.113.10\nbind_port: " + b"9" * 5000 + b"\n",
     "c1.yaml:3: bad YAML value: Exceeds the limit"),
])
def test_the_inputs_of_the_issue_are_one_line_with_a_location(tmp_path: Path, text: bytes,
                                                              message: str) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "c1.yaml").write_bytes(text)
    code, _out, err, _ = _validate(fleet, tmp_path / "state")
    assert code == 1
    lines = [ln.replace(f"{fleet}/", "") for ln in err.splitlines()]
    assert any(ln.startswith(message) for ln in lines), lines
    assert not _bad_lines(err, fleet), err


@pytest.mark.parametrize("key", ["engine", "enabled", "tags"])
def test_null_for_a_field_with_a_built_in_default_means_that_default(tmp_path: Path,
                                                                     key: str) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "defaults.yaml").write_text("all:\n  engine: miredo\n  enabled: false\n")
    (fleet / "c1.yaml").write_text(f"role: client\nserver: 203.0.113.10\n{key}: null\n")
    code, out, err, _ = _validate(fleet, tmp_path / "state")
    assert (code, err) == (0, ""), err
    assert "c1" in out
