"""The teredo-engine command line: flags, usage errors, --check, and the hand-offs."""

import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from engine import __version__, cli
from engine.config import EngineConfig
from engine.options import RunOptions, status_socket_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
VECTORS = os.path.join(ROOT, "tests", "vectors", "configs")
CHECKCONF = "/usr/sbin/miredo-checkconf"


def run_main(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def write(tmp_path, text, name="t.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- help, version, usage errors -----------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(capsys, flag):
    rc, out, err = run_main(capsys, flag)
    assert rc == 0 and err == ""
    assert out.startswith("Usage: teredo-engine [-f] [-c FILE]")
    for option in ("--conf", "--foreground", "--pidfile", "--user", "--chroot", "--check",
                   "--status", "--status-socket", "--json", "--version"):
        assert option in out


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(capsys, flag):
    rc, out, _ = run_main(capsys, flag)
    assert rc == 0 and out.splitlines()[0] == f"teredo-engine {__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-c", "a", "-c", "b"], "option -c/--conf/--config given twice"),
        (["--conf", "a", "--config=b"], "option -c/--conf/--config given twice"),
        (["-p", "a", "--pidfile", "b"], "option -p/--pidfile given twice"),
        (["-u", "a", "--username", "b"], "option -u/--user/--username given twice"),
        (["-t", "/a", "--chrootdir", "/b"], "option -t/--chroot/--chrootdir given twice"),
        (["--status-socket", "/a", "--status-socket", "/b"], "option --status-socket given twice"),
        (["203.0.113.10", "203.0.113.11"], "unexpected extra parameter: 203.0.113.11"),
        (["-x"], "unrecognized arguments: -x"),
        (["-c"], "argument -c/--conf/--config: expected one argument"),
        (["--json"], "--json only goes with --status"),
        (["--check", "--status"], "--check and --status cannot be used together"),
        (["--check", "-c", "a", "b"], "--check takes the file either with -c or as an argument"),
        (["--status", "srv"], "unexpected extra parameter: srv"),
        (["--conf"], "expected one argument"),
    ],
)
def test_usage_errors(capsys, argv, message):
    rc, out, err = run_main(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("teredo-engine: ") and message in err


def test_options_are_parsed_into_run_options():
    ns = cli.parse_args(["-f", "--config=/x.conf", "-p", "/run/a.pid", "--user", "miredo",
                         "--chroot", "/var/empty", "--status-socket", "/run/s.sock",
                         "teredo.example.net"])
    assert cli.run_options(ns) == RunOptions(
        config_path="/x.conf", foreground=True, pidfile="/run/a.pid", user="miredo",
        chrootdir="/var/empty", status_socket="/run/s.sock", server_name="teredo.example.net")


def test_defaults():
    assert cli.run_options(cli.parse_args([])) == RunOptions(
        config_path="/etc/miredo/miredo.conf", foreground=False,
        pidfile="/run/teredo-engine.pid", user=None, chrootdir=None, status_socket=None,
        server_name=None)


def test_options_after_the_server_name():
    ns = cli.parse_args(["203.0.113.10", "-f", "-c", "/x.conf"])
    opts = cli.run_options(ns)
    assert opts.server_name == "203.0.113.10"
    assert (opts.foreground, opts.config_path) == (True, "/x.conf")


# --- --check -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "role", "count"), [("client.conf", "client", 5),
                                                     ("relay.conf", "relay", 7),
                                                     ("server.conf", "server", 5)])
def test_check_examples(capsys, name, role, count):
    path = os.path.join(EXAMPLES, name)
    rc, out, err = run_main(capsys, "--check", path)
    assert (rc, err) == (0, "")
    assert out == f"{path}: OK (role {role}, {count} directives)\n"
    assert run_main(capsys, "--check", "-c", path)[:2] == (0, out)


def test_check_reports_every_problem(capsys, tmp_path):
    path = write(tmp_path, "RelayType client\nServerAdress 203.0.113.10\nBindPort 70000\n")
    rc, out, err = run_main(capsys, "--check", path)
    assert rc == 1 and out == ""
    assert err.splitlines() == [
        f"{path}:2: unknown directive 'ServerAdress' (did you mean ServerAddress?)",
        f"{path}:3: BindPort: 70000 is out of range (expected 0-65535)",
        f"{path}: ServerAddress is required in client mode (or give a server name on the "
        "command line)",
    ]


def test_check_warnings_do_not_fail(capsys, tmp_path):
    path = write(tmp_path, "RelayType restricted\nBindPort 3545")
    rc, out, err = run_main(capsys, "--check", path)
    assert rc == 0 and out == f"{path}: OK (role relay, 2 directives)\n"
    assert [line.split(": warning: ")[0] for line in err.splitlines()] == [f"{path}:1",
                                                                           f"{path}:2"]


def test_check_strict_fails_on_warnings(capsys, tmp_path):
    path = write(tmp_path, "RelayType restricted\nBindPort 3545")
    rc, out, err = run_main(capsys, "--check", "--strict", path)
    assert rc == 1 and out == ""
    assert err.splitlines()[-1] == f"{path}: 2 warnings, failing because of --strict"
    clean = write(tmp_path, "RelayType cone\n", name="clean.conf")
    assert run_main(capsys, "--check", "--strict", "-c", clean)[:2] == (
        0, f"{clean}: OK (role relay, 1 directive)\n")


def test_strict_only_with_check(capsys):
    rc, _, err = run_main(capsys, "--strict")
    assert rc == 2 and "--strict only goes with --check" in err


def test_check_prints_warnings_next_to_errors(capsys, tmp_path):
    path = write(tmp_path, "RelayType cone\nServerAddress 203.0.113.10\nBindPort 70000\n")
    rc, out, err = run_main(capsys, "--check", path)
    assert rc == 1 and out == ""
    assert [line.split(":")[1] for line in err.splitlines()] == ["2", "3"]
    assert ": warning: superfluous directive ServerAddress" in err.splitlines()[0]


def test_check_singular(capsys, tmp_path):
    path = write(tmp_path, "RelayType relay\n")
    assert run_main(capsys, "--check", path)[1] == f"{path}: OK (role relay, 1 directive)\n"


def test_check_missing_file(capsys, tmp_path):
    path = str(tmp_path / "none.conf")
    rc, _, err = run_main(capsys, "--check", path)
    assert rc == 1 and err == f"{path}: cannot read the config file: No such file or directory\n"


def test_check_binary_garbage(capsys, tmp_path):
    path = tmp_path / "junk.conf"
    path.write_bytes(bytes(range(256)) * 8)
    rc, _, err = run_main(capsys, "--check", str(path))
    assert rc == 1 and "Traceback" not in err
    assert all(line.startswith(str(path)) for line in err.splitlines())


def test_check_many_files(capsys, tmp_path):
    """One process for a fleet's configs: each file's lines are what checking it alone prints,
    every line names its file, and one failing file fails the whole check."""
    good = write(tmp_path, "RelayType cone\n", name="good.conf")
    warn = write(tmp_path, "RelayType restricted\nBindPort 3545", name="warn.conf")
    bad = write(tmp_path, "RelayType client\nBindPort 70000\n", name="bad.conf")
    missing = str(tmp_path / "none.conf")
    alone = {p: run_main(capsys, "--check", p) for p in (good, warn, bad, missing)}
    rc, out, err = run_main(capsys, "--check", good, warn, bad, missing)
    assert rc == 1
    assert out == "".join(alone[p][1] for p in (good, warn, bad, missing))
    assert err == "".join(alone[p][2] for p in (good, warn, bad, missing))
    assert all(line.startswith(tuple(alone)) for line in (out + err).splitlines())
    assert run_main(capsys, "--check", good, warn)[0] == 0
    assert run_main(capsys, "--check", "--strict", good, warn)[0] == 1


def test_check_default_file(capsys, tmp_path, monkeypatch):
    path = write(tmp_path, "RelayType cone\n")
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", path)
    assert run_main(capsys, "--check") == (0, f"{path}: OK (role relay, 1 directive)\n", "")


def test_check_ignores_the_run_flags(capsys):
    """miredo-checkconf accepts the other miredo flags and ignores them; so do we."""
    path = os.path.join(EXAMPLES, "relay.conf")
    rc, out, _ = run_main(capsys, "--check", "-f", "-u", "x", "-p", "/tmp/p", "-t", "/", path)
    assert rc == 0 and out.startswith(f"{path}: OK")


# --- running: config problems, the daemon hand-off -----------------------------------------

def test_run_with_a_bad_config(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "engine.runtime.daemon", None)
    path = write(tmp_path, "RelayType cone\nPrefix ff02::\n")
    rc, _, err = run_main(capsys, "-f", "-c", path)
    assert rc == 1
    assert err.splitlines() == [
        f"{path}:2: Prefix: ff02:: is a multicast prefix (ff00::/8); a Teredo prefix must "
        "be unicast",
        "teredo-engine: fatal configuration error",
    ]


def test_run_unreadable_default_without_server_name(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "missing.conf"))
    rc, _, err = run_main(capsys, "-f")
    assert rc == 1 and "cannot read the config file" in err


class _Recorder:
    """Stands in for the runtime's module at the seam (the real one needs root and a TUN)."""

    def __init__(self, result):
        self.calls = []
        self.result = result

    def module(self, name, function):
        m = types.ModuleType(name)

        def record(*args):
            self.calls.append(args)
            return self.result

        setattr(m, function, record)
        return m


def test_run_hands_config_and_options_to_the_daemon(capsys, monkeypatch):
    rec = _Recorder(0)
    monkeypatch.setitem(sys.modules, "engine.runtime.daemon",
                        rec.module("engine.runtime.daemon", "run"))
    path = os.path.join(EXAMPLES, "client.conf")
    rc, _, _ = run_main(capsys, "-f", "-c", path, "-p", "/run/teredo/cli1.pid", "198.51.100.3")
    assert rc == 0 and len(rec.calls) == 1
    config, opts = rec.calls[0]
    assert isinstance(config, EngineConfig) and isinstance(opts, RunOptions)
    assert config.server_address == "198.51.100.3" and config.server_from_cli
    assert opts.server_name == "198.51.100.3" and opts.foreground
    assert opts.status_socket == "/run/teredo-engine/cli1.sock"


def test_daemon_exit_code_is_passed_on(capsys, monkeypatch):
    rec = _Recorder(1)
    monkeypatch.setitem(sys.modules, "engine.runtime.daemon",
                        rec.module("engine.runtime.daemon", "run"))
    assert run_main(capsys, "-c", os.path.join(EXAMPLES, "server.conf"))[0] == 1
    assert rec.calls[0][1].status_socket == "/run/teredo-engine/server.sock"


# --- --status ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "text", "socket", "as_json"),
    [
        (["--status-socket", "/run/x.sock", "--json"], None, "/run/x.sock", True),
        (["-c", "{path}"], "RelayType cone\nStatusSocket /run/r.sock\n", "/run/r.sock", False),
        (["-c", "{path}"], "RelayType cone\n", "/run/teredo-engine/relay.sock", False),
        (["-c", "{path}", "-p", "/run/e1.pid"], "RelayType cone\n",
         "/run/teredo-engine/e1.sock", False),
        # --status must find the socket even in a file with errors (and never uses DNS)
        (["-c", "{path}"], "ServerBindAddress no.such.example\nBogus 1\n",
         "/run/teredo-engine/server.sock", False),
    ],
)
def test_status_finds_the_socket(capsys, monkeypatch, tmp_path, argv, text, socket, as_json):
    rec = _Recorder(0)
    monkeypatch.setitem(sys.modules, "engine.runtime.status_client",
                        rec.module("engine.runtime.status_client", "main"))
    path = write(tmp_path, text) if text else ""
    argv = [a.replace("{path}", path) for a in argv]
    assert run_main(capsys, "--status", *argv)[0] == 0
    opts, json_flag = rec.calls[0]
    assert opts.status_socket == socket and json_flag is as_json


def test_status_socket_rule():
    assert status_socket_path("/a.sock", "/b.sock", "/run/x.pid", "client") == "/a.sock"
    assert status_socket_path(None, "/b.sock", "/run/x.pid", "client") == "/b.sock"
    assert status_socket_path(None, None, "/run/x.pid", "client") == "/run/teredo-engine/x.sock"
    assert status_socket_path(None, None, "/run/y", "relay") == "/run/teredo-engine/y.sock"
    assert status_socket_path(None, None, None, "relay") == "/run/teredo-engine/relay.sock"


# --- as a real process ---------------------------------------------------------------------

def engine_process(*argv):
    return subprocess.run([sys.executable, "-m", "engine", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_python_m_engine_check():
    path = os.path.join(VECTORS, "lab-server.conf")
    p = engine_process("--check", path)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == f"{path}: OK (role server, 3 directives)\n"


def test_python_m_engine_usage_and_version():
    p = engine_process("-c", "a", "-c", "b")
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    p = engine_process("-V")
    assert p.returncode == 0 and p.stdout.startswith("teredo-engine ")


def test_python_m_engine_bad_config(tmp_path):
    path = write(tmp_path, "RelayType cone\nInterfaceMTU 99\n")
    p = engine_process("--check", path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"{path}:2: InterfaceMTU: MTU 99 is out of range")


# --- against Debian's miredo-checkconf -----------------------------------------------------

needs_checkconf = pytest.mark.skipif(not shutil.which(CHECKCONF) and not os.path.exists(CHECKCONF),
                                     reason="Debian's miredo-checkconf is not installed")


def checkconf(path):
    return subprocess.run([CHECKCONF, path], capture_output=True, text=True, timeout=30)


@needs_checkconf
@pytest.mark.parametrize("path", [os.path.join(EXAMPLES, "client.conf"),
                                  os.path.join(EXAMPLES, "relay.conf"),
                                  os.path.join(VECTORS, "lab-client.conf"),
                                  os.path.join(VECTORS, "lab-client-bindport.conf"),
                                  os.path.join(VECTORS, "lab-relay.conf")])
def test_miredo_checkconf_accepts_what_we_accept(path, capsys):
    p = checkconf(path)
    assert p.returncode == 0, p.stderr
    assert run_main(capsys, "--check", path)[0] == 0


@needs_checkconf
@pytest.mark.parametrize(
    "text",
    [
        "RelayType cone\nBindPort 70000\n",
        "RelayType cone\nBindPort 12ab\n",
        "RelayType cone\nSyslogFacility local9\n",
        "RelayType gateway\n",
        "RelayType client\n",  # no ServerAddress
        "RelayType cone\nFrobnicate 1\n",
    ],
)
# Not listed: `Prefix ff02::` and `InterfaceMTU 1279` in relay mode. miredo-checkconf passes
# them although the daemon then fails (fatal prefix, TUN MTU refused); we reject them.
def test_miredo_checkconf_rejects_what_we_reject(tmp_path, capsys, text):
    path = write(tmp_path, text)
    assert checkconf(path).returncode != 0
    assert run_main(capsys, "--check", path)[0] == 1
    assert run_main(capsys, "--check", "--strict", path)[0] == 1


@needs_checkconf
@pytest.mark.parametrize(
    "text",
    [
        "RelayType client\nServerAddress 203.0.113.10\nPrefix 2001::\n",  # not in client mode
        "RelayType cone\nServerAddress 203.0.113.10\n",  # not in relay mode
        "RelayType cone\nBindPort 1\nBindPort 2\n",  # a duplicate
    ],
)
def test_superfluous_directives_fail_only_strict_checks(tmp_path, capsys, text):
    """miredo-checkconf fails on any warning while miredo itself runs; so do --check --strict
    and our daemon."""
    path = write(tmp_path, text)
    assert checkconf(path).returncode != 0
    rc, out, err = run_main(capsys, "--check", path)
    assert rc == 0 and ": OK (role " in out and ": warning: superfluous directive " in err
    rc, out, err = run_main(capsys, "--check", "--strict", path)
    assert rc == 1 and out == ""
    assert err.splitlines()[-1] == f"{path}: 1 warning, failing because of --strict"


def test_an_internal_error_says_where_it_happened(capsys, monkeypatch) -> None:
    from miredoctl import cli

    monkeypatch.delenv("MIREDOCTL_DEBUG", raising=False)
    try:
        [][0]
    except IndexError as exc:
        line = sys._getframe().f_lineno - 2
        assert cli._internal_error(exc) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("miredoctl: internal error (IndexError: list index out of range at "
                          f"tests/unit/test_cli.py:{line}); please report it"), err
    assert len(err.splitlines()) == 1


_LAUNCH = """
import gc, json, sys
seen = []
class Watch:  # notes the collector's state when engine.cli is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "engine.cli":
            seen.append(gc.isenabled())
        return None
sys.meta_path.insert(0, Watch())
sys.argv = ["teredo-engine", "-V"]
from engine.launch import main
rc = main()
print(json.dumps([seen, rc]))
"""


def test_the_command_turns_the_collector_off_before_importing_the_cli():
    """`teredo-engine` and ``python -m engine`` start at `engine.launch`, which turns the
    collector off before `engine.cli` and its imports load (docs/performance.md)."""
    import tomllib

    cp = subprocess.run([sys.executable, "-c", _LAUNCH], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout.splitlines()[-1]) == [[False], 0]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["teredo-engine"] == "engine.launch:main"
    with open(os.path.join(root, "engine", "__main__.py")) as f:
        assert "from engine.launch import main" in f.read()
