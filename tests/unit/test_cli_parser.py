"""The command line's plain-form parser (`cli._parse_plain`, no argparse on the start path)
against the argparse parser it stands in for (`cli._parser`): on every command line the plain
parser accepts, both give the same options or the same usage error; everything else goes to
argparse, so its results and messages are argparse's by construction."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

from engine import cli

TOKENS = ("-c", "--conf", "--config=/a.conf", "-f", "--foreground", "-p", "--pidfile=/r.pid",
          "-u", "--username", "-t", "--chroot=/var/empty", "--status-socket",
          "--status-socket=/s.sock", "--check", "--strict", "--status", "--json", "-V", "-h",
          "/x.conf", "srv.example", "", "-x", "--", "-fV", "-cfile", "-c=v", "--conf=",
          "--foreground=1", "-", "--stat", "a b", "-1")


def reference(argv: list[str]) -> tuple[str, object]:
    try:
        return "ok", vars(cli._parser().parse_intermixed_args(argv))
    except cli.UsageError as e:
        return "error", str(e)


def plain(argv: list[str]) -> tuple[str, object] | None:
    try:
        ns = cli._parse_plain(argv)
    except cli.UsageError as e:
        return "error", str(e)
    return None if ns is None else ("ok", vars(ns))


def check(argv: list[str]) -> bool:
    """Whether the plain parser took `argv` (and then agreed with argparse)."""
    got = plain(argv)
    if got is not None:
        assert got == reference(argv), argv
    return got is not None


def test_every_short_command_line_agrees_with_argparse():
    taken = 0
    for n in range(4):
        for argv in itertools.product(TOKENS, repeat=n):
            taken += check(list(argv))
    assert taken > 1000  # the plain parser does take the usual forms


def test_random_longer_command_lines_agree_with_argparse():
    rng = random.Random(15)
    for _ in range(5000):
        check([rng.choice(TOKENS) for _ in range(rng.randint(4, 9))])


def test_what_the_plain_parser_takes_and_leaves():
    assert cli._parse_plain(["-f", "-c", "/etc/miredo/miredo.conf", "-p", "/run/x.pid",
                             "--status-socket", "/run/x.sock", "srv"]) is not None
    for unusual in (["-fc", "x"], ["-c", "-x"], ["-x"], ["--", "srv"], ["-c"], ["-c=x"],
                    ["--json=1"]):
        assert cli._parse_plain(unusual) is None, unusual


def test_the_start_path_does_not_import_argparse():
    code = ("import sys\nfrom engine import cli\n"
            "cli.parse_args(['-f', '-c', '/x.conf', '-p', '/r.pid', 'srv'])\n"
            "print('argparse' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
