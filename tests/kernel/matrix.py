"""The interop matrix: which implementation plays which role, and one table for the whole run.

A combination fixes, for the server, the relay and both clients, whether Debian's miredo
("D") or our engine ("O") plays it, and which NAT type sits in front of client 2.  Every
combination runs the eight lab paths of `paths.PATHS` in one fresh lab.  Results are kept
in this module for the session so that

* the symmetric-NAT combinations can be judged against what all-Debian did in the same run
  (miredo 1.2.6 cannot punch through a symmetric NAT, so "all PASS" is not the bar there:
  "at least as well as miredo, path by path" is), except the RFC 6081 rows of our engine
  (`all_pass`), which must pass every path whatever miredo did, and
* `pytest_terminal_summary` (tests/kernel/conftest.py) prints ONE table at the end, where a
  difference between combinations is visible at a glance.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from teredolab.topology import NetnsLab
from tests.kernel.harness import (
    DEBIAN,
    OURS,
    Implementation,
    PingResult,
    Stack,
    decode_teredo,
    start_stack,
    teredo_address,
)
from tests.kernel.paths import PATHS, PathResult, PingPath, run_paths

IMPLS: dict[str, Implementation] = {"D": DEBIAN, "O": OURS}
ROLE_KEYS = ("server", "relay", "cli", "cli2")  # the keys start_stack() understands


@dataclass(frozen=True)
class Combo:
    """One matrix row: `roles` is four letters (server, relay, cli, cli2), D or O."""

    roles: str
    nat2: str = "restricted"
    why: str = ""
    all_pass: bool = False
    """Every path must PASS whatever miredo did (RFC 6081 rows of our engine on both ends)."""
    xfail: str = ""
    """Why client-to-client is expected to fail in this row (printed under the table)."""

    def __post_init__(self) -> None:
        if len(self.roles) != 4 or set(self.roles) - set(IMPLS):
            raise ValueError(f"Combo.roles={self.roles!r}: four letters of D (Debian) / O (ours)"
                             " for server, relay, cli, cli2")

    @property
    def id(self) -> str:
        """pytest id, e.g. `srvO-rlyD-cliO-cli2D-symmetric`: a failure names the combination."""
        parts = [f"{k.replace('server', 'srv').replace('relay', 'rly')}{c}"
                 for k, c in zip(ROLE_KEYS, self.roles, strict=True)]
        return "-".join(parts) + f"-{self.nat2}"

    @property
    def all_debian(self) -> bool:
        return self.roles == "DDDD"

    def impl(self, key: str) -> Implementation:
        return IMPLS[self.roles[ROLE_KEYS.index(key)]]

    def overrides(self) -> dict[str, Implementation]:
        return {k: self.impl(k) for k in ROLE_KEYS}


# Order matters only for reading the table (and so that each NAT type's all-Debian baseline
# runs before the combinations compared with it; a combination run alone computes it).
COMBOS: tuple[Combo, ...] = (
    Combo("DDDD", why="miredo everywhere: the reference"),
    Combo("OOOO", why="ours everywhere"),
    Combo("DODD", why="our relay between miredo's server and clients"),
    Combo("ODDD", why="our server for miredo's relay and clients (issue 3, scenario 1)"),
    Combo("OODD", why="miredo clients through our server and relay"),
    Combo("DDOO", why="our clients with miredo's server and relay"),
    Combo("DDOD", why="our client next to a miredo client, miredo server+relay (scenario 2)"),
    Combo("ODOO", why="miredo's relay for our server and clients"),
    Combo("OOOD", why="mixed clients across our server and relay (scenario 3)"),
    Combo("DDDD", "symmetric", "miredo baseline behind a symmetric NAT"),
    Combo("OOOO", "symmetric", "ours everywhere, NAT 2 symmetric",
          xfail="RFC 6081 cannot help: NAT 2 gives random ports and NAT 1 (Linux masquerade) "
          "admits only the exact peer port it sent to"),
    Combo("OODD", "symmetric", "miredo clients through our server+relay, NAT 2 symmetric"),
    Combo("DDOO", "symmetric", "our clients with miredo server+relay, NAT 2 symmetric",
          xfail="RFC 6081 cannot help: NAT 2 gives random ports and NAT 1 (Linux masquerade) "
          "admits only the exact peer port it sent to"),
    # issue 16, RFC 6081: the other symmetric NAT kinds, and both clients behind NAT 1
    Combo("DDDD", "symmetric-sequential", "miredo baseline behind a sequential symmetric NAT"),
    Combo("OOOO", "symmetric-sequential", "ours everywhere: sequential port prediction",
          all_pass=True),
    Combo("DDOO", "symmetric-sequential", "our clients, miredo server+relay", all_pass=True),
    Combo("OODO", "symmetric-sequential", "our cli2 behind the sequential NAT, miredo cli"),
    Combo("OOOD", "symmetric-sequential", "miredo cli2 behind the sequential NAT, our cli"),
    Combo("DDDD", "symmetric-preserving", "miredo baseline behind a port-preserving NAT"),
    Combo("OOOO", "symmetric-preserving", "ours everywhere: a fresh port per peer",
          all_pass=True),
    Combo("OODO", "symmetric-preserving", "our cli2 behind the preserving NAT, miredo cli"),
    Combo("OOOD", "symmetric-preserving", "miredo cli2 behind the preserving NAT, our cli"),
    Combo("DDDD", "shared", "miredo baseline: both clients behind NAT 1, no hairpin"),
    Combo("OOOO", "shared", "ours everywhere: hairpinning (alternate addresses)",
          all_pass=True),
    Combo("OODO", "shared", "our cli2 next to a miredo cli behind NAT 1"),
)

_RANK = {"FAIL": 0, "PARTIAL": 1, "PASS": 2}


def worse_than(ours: PathResult, baseline: PathResult) -> bool:
    """True when `ours` did worse than the baseline on the same path (FAIL < PARTIAL < PASS)."""
    return _RANK[ours.verdict] < _RANK[baseline.verdict]


# --------------------------------------------------------------------------- one run
@dataclass
class ComboRun:
    """What one combination did: qualification per client and one row per path."""

    combo: Combo
    qualify: dict[str, float] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    rows: list[PathResult] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    left_behind: list[str] = field(default_factory=list)
    logs: str = ""
    problems: list[str] = field(default_factory=list)


def _address_problems(lab: NetnsLab, stack: Stack) -> list[str]:
    """Every client's address is a Teredo address naming the lab server and its own NAT."""
    wan = {"cli": lab.spec.nat_wan, "cli2": lab.spec.cli2_wan}
    out = []
    for role, c in stack.clients.items():
        if ipaddress.IPv6Address(c.address) not in lab.spec.teredo_network:
            out.append(f"{role}: {c.address} outside {lab.spec.teredo_network}")
            continue
        parts = decode_teredo(c.address)
        if parts.server != lab.spec.srv_ip1 or parts.client != wan[role] or not parts.port:
            out.append(f"{role}: {c.address} decodes to server {parts.server}, mapped "
                       f"{parts.client}:{parts.port} (want server {lab.spec.srv_ip1}, "
                       f"mapped {wan[role]})")
    return out


def run_combo(lab: NetnsLab, run_dir: Path, combo: Combo) -> ComboRun:
    """Start the combination's four daemons, ping every path in order, stop them with TERM.

    Never raises for a failed path: the caller judges `ComboRun` (so the table gets every
    row).  A daemon that does not start or qualify raises HarnessError after stopping what
    was started."""
    stack = start_stack(lab, run_dir, DEBIAN, combo.overrides())
    run = ComboRun(combo)
    try:
        run.qualify = {r: c.qualify_seconds for r, c in stack.clients.items()}
        run.addresses = stack.addresses()
        run.problems += _address_problems(lab, stack)
        run.rows = run_paths(lab, run.addresses)
    finally:
        run.logs = stack.logs()
        run.exit_codes = stack.stop()
        for role in ("rly", "cli", "cli2"):
            if teredo_address(lab, role, lab.spec.teredo_if) is not None:
                run.left_behind.append(f"{role}: {lab.spec.teredo_if} still has an address")
    RESULTS.append(run)
    return run


def miredo_expected(nat2: str, path: PingPath) -> str | None:
    """What Debian's miredo everywhere is known to do on `path` with this NAT 2, or None
    when the run itself is the record (the RFC 6081 NAT kinds: miredo speaks none of the
    extensions, so client-to-client is its own baseline; every other path must pass)."""
    if nat2 == "symmetric":
        return miredo_symmetric(path)
    if nat2 in ("symmetric-sequential", "symmetric-preserving", "shared"):
        return None if path.roles == {"cli", "cli2"} else "PASS"
    return "PASS"


def miredo_symmetric(path: PingPath) -> str:
    """The verdict of Debian's miredo everywhere with NAT 2 symmetric: cli2 qualifies and the
    relay paths work (miredo accepts the relay's bubbles from a mismatched mapping when the
    nonce checks out), but client-to-client fails (miredo 1.2.6 has no symmetric NAT
    traversal; RFC 6081 would close that gap)."""
    return "FAIL" if path.roles == {"cli", "cli2"} else "PASS"


def judge(run: ComboRun, baseline: ComboRun | None) -> list[str]:
    """Why this run fails, one line each; empty when it is good.

    Restricted NATs: every path must PASS (miredo passes all eight there).  All-Debian behind
    a symmetric NAT 2 must do exactly what miredo 1.2.6 is known to do (`miredo_symmetric`).
    Otherwise every path must do at least as well as all-Debian did behind the same NATs in
    this run."""
    bad = list(run.problems)
    if [r.path for r in run.rows] != list(PATHS):
        bad.append("not every path was run: " + ", ".join(r.path.name for r in run.rows))
    if run.combo.all_debian and run.combo.nat2 != "restricted":
        for r in run.rows:
            want = miredo_expected(run.combo.nat2, r.path)
            if want is not None and r.verdict != want:
                bad.append(f"{r.path.name}: {r.verdict} {r.result.summary()} but miredo 1.2.6 "
                           f"behind a {run.combo.nat2} NAT gives {want}")
    elif run.combo.nat2 == "restricted" or baseline is None or run.combo.all_pass:
        bad += [f"{r.path.name}: {r.verdict} {r.result.summary()}" for r in run.rows
                if r.verdict != "PASS"]
    else:
        base = {r.path: r for r in baseline.rows}
        bad += [f"{r.path.name}: {r.verdict} {r.result.summary()} but miredo "
                f"{base[r.path].verdict} {base[r.path].result.summary()}"
                for r in run.rows if r.path in base and worse_than(r, base[r.path])]
    bad += [f"{name} exited with status {code} on SIGTERM"
            for name, code in run.exit_codes.items() if code != 0]
    bad += run.left_behind
    return bad


# --------------------------------------------------------------------------- the session
RESULTS: list[ComboRun] = []


def baseline(nat2: str, runs: list[ComboRun] | None = None) -> ComboRun | None:
    """The latest all-Debian run behind the given NAT 2 type in `runs` (default: this
    session's)."""
    for run in reversed(RESULTS if runs is None else runs):
        if run.combo.all_debian and run.combo.nat2 == nat2:
            return run
    return None


def ensure_baseline(nat2: str, make_run: Callable[[], ComboRun]) -> ComboRun:
    """The session's all-Debian run for `nat2`, running it now (via `make_run`) if none."""
    return baseline(nat2) or make_run()


NOTES: list[str] = []  # free-form lines for the end of the run (side-by-side timings)


def note(line: str) -> None:
    NOTES.append(line)


def _cell(res: PingResult) -> str:
    if res.sent and res.received == res.sent and res.avg is not None:
        return f"{res.avg:.2f}"
    if res.received and res.avg is not None:
        return f"{res.received}/{res.sent} {res.avg:.2f}"
    return "FAIL"


def format_matrix(runs: list[ComboRun]) -> str:
    """ONE table: a row per combination, a column per path (cell = avg RTT in ms when every
    echo came back, `r/s avg` when some did, FAIL when none), with a legend of the paths."""
    if not runs:
        return ""
    head = ["srv rly cli cli2", "NAT 2", "qual cli/cli2 s"]
    head += [f"P{i}" for i in range(1, len(PATHS) + 1)] + ["verdict"]
    table = []
    for run in runs:
        roles = "  ".join(f"{c}" for c in run.combo.roles)
        q = "/".join(f"{run.qualify[r]:.3f}" if r in run.qualify else "-"
                     for r in ("cli", "cli2"))
        by_path = {r.path: r for r in run.rows}
        cells = [_cell(by_path[p].result) if p in by_path else "-" for p in PATHS]
        verdict = "ok" if not judge(run, baseline(run.combo.nat2, runs)) else "BAD"
        table.append([f" {roles}", run.combo.nat2, q, *cells, verdict])
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [head, *table]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("D = Debian miredo 1.2.6, O = ours; cells: avg RTT ms (5/5 replies), "
                 "r/s avg (some), FAIL (none)")
    for i, p in enumerate(PATHS, 1):
        lines.append(f"P{i}: {p.name} [{p.state}, {p.size} bytes]")
    reasons = sorted({(r.combo.nat2, r.combo.xfail) for r in runs if r.combo.xfail})
    for nat2, why in reasons:
        lines.append(f"expected client-to-client FAIL with NAT 2 {nat2}: {why}")
    if any(r.combo.nat2 in ("symmetric-sequential", "symmetric-preserving", "shared")
           for r in runs):
        lines.append("NAT 2 shared = cli2 on a second LAN of NAT 1, which does not hairpin; "
                     "rows judged 'every path' are RFC 6081 rows of our engine")
    return "\n".join(lines)


def summary_text() -> str:
    """Everything this module collected in the session, for the terminal summary."""
    parts = []
    if RESULTS:
        parts.append(format_matrix(RESULTS))
    if NOTES:
        parts.append("\n".join(NOTES))
    return "\n\n".join(parts)
