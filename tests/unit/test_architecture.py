"""The rooms of the repository and the arrows between them (docs/architecture.md).

Every ``.py`` file under the production packages is parsed with ``ast``; every import it makes
(at module level, inside functions, and ``importlib.import_module("...")`` / ``__import__``
with a literal or f-string prefix) is checked against ``RULES``.  A forbidden arrow fails with
``file:line: forbidden import A -> B [rule]: why``.

``RULES`` is the one definition: the "Forbidden arrows" table of docs/architecture.md is
``rules_markdown()`` verbatim, and ``test_doc_table_is_the_rule_table`` keeps the two equal.
Print the table with ``python -m tests.unit.test_architecture``.

``PENDING`` lists violations known to be on their way out (code being moved as this test
lands).  Each entry must still be a violation, so an entry that is fixed fails the test until it
is removed from the set: the set only ever shrinks, and the rules are never weakened.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Packages whose code is checked (teredolab may not exist in an older checkout).
CHECKED = ("engine", "miredoctl", "teredolab")
#: Top-level names that are this repository's own code.
FIRST_PARTY = ("engine", "miredoctl", "teredolab", "bench", "tests", "fuzz")
#: Development tooling: nothing that ships may import it.
DEV_ONLY = ("bench", "tests", "fuzz")
#: Marker for "any module that is neither the standard library nor first-party".
THIRD_PARTY = "<third-party>"

#: Standard-library modules that do I/O, read clocks or manage processes: not in the pure core.
IO_MODULES = (
    "os", "io", "pathlib", "shutil", "tempfile", "glob", "fcntl", "mmap",
    "socket", "socketserver", "ssl", "select", "selectors", "asyncio",
    "subprocess", "signal", "threading", "multiprocessing", "concurrent", "ctypes",
    "time", "datetime", "logging", "syslog", "urllib", "http", "xmlrpc",
)
#: Pure helpers of those modules that the core may use: text <-> packed address conversions.
PURE_NAMES = {
    "socket": frozenset({"inet_pton", "inet_ntop", "inet_aton", "inet_ntoa",
                         "AF_INET", "AF_INET6"}),
}


@dataclass(frozen=True)
class Rule:
    name: str
    sources: tuple[str, ...]  # module prefixes the rule applies to
    forbidden: tuple[str, ...]  # module prefixes (or THIRD_PARTY) they must not import
    why: str
    allowed: tuple[str, ...] = ()  # exceptions inside `forbidden`
    typing_only: tuple[str, ...] = ()  # allowed inside `if TYPE_CHECKING:` (annotations only)
    pure_names: dict[str, frozenset[str]] = field(default_factory=dict)  # see PURE_NAMES


RULES: tuple[Rule, ...] = (
    Rule("proto-imports-only-proto", ("engine.proto",), FIRST_PARTY,
         "the protocol core knows nothing of the runtime, the config parser, the CLI, the "
         "manager or the lab; it is driven through its Role protocol (roles may name "
         "EngineConfig in annotations, under `if TYPE_CHECKING:`)",
         allowed=("engine.proto",), typing_only=("engine.config.model",)),
    Rule("proto-stdlib-only", ("engine.proto",), (THIRD_PARTY,),
         "the protocol core needs no third-party package"),
    Rule("proto-no-io", ("engine.proto",), IO_MODULES,
         "no sockets, no os calls, no clock reads: time, randomness and host facts are passed "
         "in (only socket's address conversions are allowed)",
         pure_names=PURE_NAMES),
    Rule("config-below-runtime", ("engine.config",), ("engine.runtime", "engine.cli",
                                                       "engine.launch", "engine.__main__"),
         "the config parser turns miredo.conf into an EngineConfig and does no I/O beyond "
         "reading the file and resolving names; the runtime uses it, not the reverse"),
    Rule("runtime-below-cli", ("engine.runtime",), ("engine.cli", "engine.launch",
                                                     "engine.__main__"),
         "the command line starts the runtime; the runtime does not reach back into it"),
    Rule("engine-not-manager", ("engine",), ("miredoctl",),
         "the engine does not know that a manager exists"),
    Rule("manager-not-engine", ("miredoctl",), ("engine",),
         "miredoctl talks to an engine only through the config file format, the command "
         "line and the status socket JSON (docs/contracts.md §3, §4), so Debian's miredo can "
         "stand in for it"),
    Rule("production-not-lab", ("engine", "miredoctl"), ("teredolab",),
         "the lab and the demo use the product; the product never imports the lab"),
    Rule("production-not-dev", ("engine", "miredoctl", "teredolab"), DEV_ONLY,
         "tests, benchmarks and fuzzing import the code they exercise, never the other way"),
    Rule("listeners-stand-alone", ("miredoctl.listeners",), ("miredoctl",),
         "the event listeners run inside supervisord: they import only each other and the "
         "state folder's helpers, never the command's modules",
         allowed=("miredoctl.listeners", "miredoctl.state", "miredoctl.errors")),
)

#: (rule, importing module, imported name) violations that code in flight is removing.
#: Empty it as the moves land; an entry that no longer occurs fails the test.
PENDING: frozenset[tuple[str, str, str]] = frozenset()


# --- the checker -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    path: str  # relative to ROOT
    line: int
    source: str  # importing module
    target: str  # imported module (or module.attribute for a restricted module)
    typing_only: bool = False  # inside `if TYPE_CHECKING:`


@dataclass(frozen=True)
class Violation:
    imp: Import
    rule: Rule

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule.name, self.imp.source, self.imp.target)

    def __str__(self) -> str:
        i = self.imp
        return (f"{i.path}:{i.line}: forbidden import {i.source} -> {i.target} "
                f"[{self.rule.name}]: {self.rule.why}")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _resolve_relative(source: str, is_package: bool, level: int, module: str | None) -> str:
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_prefix(node: ast.expr) -> str | None:
    """The module named by an import_module argument: a literal, or an f-string's dotted head."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head.rsplit(".", 1)[0] if "." in head else None
    return None


def imports_of(source_text: str, source: str, path: str = "<string>", *,
               is_package: bool = False, known: frozenset[str] = frozenset()) -> list[Import]:
    """Every import in one module's source. `known` names first-party modules, so that
    `from pkg import sub` counts as importing `pkg.sub` when `pkg.sub` is a module."""
    tree = ast.parse(source_text, filename=path)
    found: list[Import] = []
    restricted_aliases: dict[str, str] = {}  # local name -> module, for PURE_NAMES modules
    typing_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                getattr(node.test, "id", None) == "TYPE_CHECKING"
                or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            typing_nodes.update(id(n) for stmt in node.body for n in ast.walk(stmt))

    def add(line: int, target: str, at: ast.AST | None = None) -> None:
        found.append(Import(path, line, source, target, id(at) in typing_nodes))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name, node)
                if alias.name in PURE_NAMES:
                    restricted_aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(source, is_package, node.level, node.module)
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(node.lineno, sub if sub in known or base in PURE_NAMES else base, node)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args:
                target = _literal_prefix(node.args[0])
                if target:
                    add(node.lineno, target)
    # `import socket` is judged by what is used: socket.inet_pton is pure, socket.socket is not.
    if restricted_aliases:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in restricted_aliases):
                add(node.lineno, f"{restricted_aliases[node.value.id]}.{node.attr}")
    return found


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def violations_of(imports: list[Import], rules: tuple[Rule, ...] = RULES) -> list[Violation]:
    out: list[Violation] = []
    for imp in imports:
        for rule in rules:
            if not any(_within(imp.source, s) for s in rule.sources):
                continue
            if any(_within(imp.target, a) for a in rule.allowed):
                continue
            if imp.typing_only and any(_within(imp.target, a) for a in rule.typing_only):
                continue
            top = imp.target.split(".")[0]
            if THIRD_PARTY in rule.forbidden and top not in FIRST_PARTY and not _is_stdlib(top):
                out.append(Violation(imp, rule))
                continue
            hit = next((f for f in rule.forbidden if f != THIRD_PARTY and _within(imp.target, f)),
                       None)
            if hit is None:
                continue
            pure = rule.pure_names.get(hit)
            # `import socket` itself is fine; each `socket.X` use is judged on its own.
            if pure is not None and (imp.target == hit or imp.target[len(hit) + 1:] in pure):
                continue
            out.append(Violation(imp, rule))
    return out


def production_files(root: Path = ROOT) -> list[Path]:
    files: list[Path] = []
    for pkg in CHECKED:
        if (root / pkg).is_dir():
            files.extend(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)


def scan(root: Path = ROOT) -> tuple[list[Import], list[Violation]]:
    files = production_files(root)
    known = frozenset(module_name(p, root) for p in files)
    imports: list[Import] = []
    for p in files:
        imports += imports_of(p.read_text(encoding="utf-8"), module_name(p, root),
                              str(p.relative_to(root)), is_package=p.name == "__init__.py",
                              known=known)
    return imports, violations_of(imports)


def rules_markdown(rules: tuple[Rule, ...] = RULES) -> str:
    """The "Forbidden arrows" table of docs/architecture.md."""
    def names(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{i}`" if i != THIRD_PARTY else "third-party packages" for i in items)

    rows = ["| rule | from | must not import | except | why |", "|---|---|---|---|---|"]
    for r in rules:
        forbidden = names(r.forbidden)
        if r.pure_names:
            forbidden += "; of " + ", ".join(
                f"`{m}` only {', '.join(sorted(n))}" for m, n in r.pure_names.items())
        allowed = names(r.allowed) or "—"
        if r.typing_only:
            allowed += f"; {names(r.typing_only)} for typing only"
        rows.append(f"| `{r.name}` | {names(r.sources)} | {forbidden} | {allowed} | {r.why} |")
    return "\n".join(rows)


# --- the tests ---------------------------------------------------------------------------------

def test_no_forbidden_import() -> None:
    _, found = scan()
    unexpected = [str(v) for v in found if v.key not in PENDING]
    assert not unexpected, "forbidden imports (see docs/architecture.md):\n" + "\n".join(unexpected)


def test_pending_violations_still_exist() -> None:
    """A fixed violation must leave PENDING, so the exceptions only ever shrink."""
    _, found = scan()
    still = {v.key for v in found}
    fixed = sorted(PENDING - still)
    assert not fixed, f"no longer violated, remove from PENDING in {__file__}: {fixed}"


def test_checker_reports_a_forbidden_import() -> None:
    """The checker itself must fail on a violation (it cannot pass by seeing nothing)."""
    src = (
        "import os\n"
        "import socket\n"
        "from engine.runtime import loop\n"
        "from . import wire\n"
        "def later():\n"
        "    import teredolab.topology\n"
        "    importlib.import_module('engine.config')\n"
        "    importlib.import_module(f'engine.runtime.{name}')\n"
        "    return socket.socket(), socket.inet_pton(socket.AF_INET, '192.0.2.1')\n"
    )
    imports = imports_of(src, "engine.proto.fake", "engine/proto/fake.py",
                         known=frozenset({"engine.runtime.loop"}))
    got = {(v.imp.line, v.rule.name, v.imp.target) for v in violations_of(imports)}
    assert got == {
        (1, "proto-no-io", "os"),
        (3, "proto-imports-only-proto", "engine.runtime.loop"),
        (6, "proto-imports-only-proto", "teredolab.topology"),
        (6, "production-not-lab", "teredolab.topology"),
        (7, "proto-imports-only-proto", "engine.config"),
        (8, "proto-imports-only-proto", "engine.runtime"),
        (9, "proto-no-io", "socket.socket"),
    }
    message = str(next(v for v in violations_of(imports) if v.imp.line == 3))
    assert message.startswith("engine/proto/fake.py:3: forbidden import engine.proto.fake -> "
                              "engine.runtime.loop [proto-imports-only-proto]: ")


def test_checker_other_rooms() -> None:
    cases = {
        ("miredoctl.status", "import engine.runtime.status_client\n"): "manager-not-engine",
        ("miredoctl.render", "from teredolab import topology\n"): "production-not-lab",
        ("engine.config.loader", "from engine.runtime import netlink\n"): "config-below-runtime",
        ("engine.runtime.parent", "from engine.cli import main\n"): "runtime-below-cli",
        ("engine.runtime.worker", "import miredoctl.state\n"): "engine-not-manager",
        ("teredolab.demo", "from tests.kernel import harness\n"): "production-not-dev",
        ("miredoctl.listeners.reaper", "from miredoctl import ops\n"): "listeners-stand-alone",
        ("engine.proto.wire", "import pyroute2\n"): "proto-stdlib-only",
        # typing-only is an exception for the config model alone, and only under TYPE_CHECKING
        ("engine.proto.role", "if TYPE_CHECKING:\n    from engine.runtime.loop import Loop\n"):
            "proto-imports-only-proto",
        ("engine.proto.role", "from engine.config.model import EngineConfig\n"):
            "proto-imports-only-proto",
    }
    for (module, src), rule in cases.items():
        names = {v.rule.name for v in violations_of(imports_of(src, module))}
        assert rule in names, (module, src, names)
    # and the arrows that are allowed stay allowed
    allowed = {
        ("engine.runtime.worker", "from engine.proto import client\n"),
        ("engine.config.loader", "from engine.proto.addr import TEREDO_PORT\n"),
        ("miredoctl.status", "from miredoctl.listeners import timedlog\n"),
        ("miredoctl.listeners.history", "from miredoctl.state import write_atomic\n"),
        ("teredolab.netns", "from miredoctl.procs import alive\n"),
        ("engine.proto.addr", "import socket\nx = socket.inet_ntoa(b'1234')\n"),
        ("engine.proto.client", "import secrets\nimport hashlib\n"),
        ("engine.proto.role", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from engine.config.model import EngineConfig\n"),
    }
    for module, src in allowed:
        assert not violations_of(imports_of(src, module)), (module, src)


def test_doc_table_is_the_rule_table() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert rules_markdown() in doc, (
        "docs/architecture.md's 'Forbidden arrows' table differs from RULES; paste the output "
        "of `python -m tests.unit.test_architecture` into it")


def test_every_module_imports() -> None:
    """Import every production module (in a fresh interpreter, so no test state leaks in or
    out); `__main__` modules run on import, so only their own imports are resolved."""
    files = production_files()
    modules = [module_name(p) for p in files if p.name != "__main__.py"]
    mains = [p for p in files if p.name == "__main__.py"]
    code = (
        "import importlib, json, sys, traceback\n"
        "bad = {}\n"
        f"for m in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except BaseException:\n"
        "        bad[m] = traceback.format_exc(limit=3)\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad, "modules that fail to import:\n" + "\n".join(
        f"{m}:\n{t}" for m, t in bad.items())

    known = frozenset(modules) | {module_name(p) for p in mains}
    import importlib.util
    for p in mains:
        for imp in imports_of(p.read_text(encoding="utf-8"), module_name(p), str(p), known=known):
            if imp.target.split(".")[0] in FIRST_PARTY:
                assert importlib.util.find_spec(imp.target) is not None, (
                    f"{imp.path}:{imp.line}: no module {imp.target}")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_is_well_formed(rule: Rule) -> None:
    assert rule.sources and rule.forbidden and rule.why
    for prefix in rule.sources + rule.allowed:
        assert prefix.split(".")[0] in FIRST_PARTY, prefix


if __name__ == "__main__":
    print(rules_markdown())
