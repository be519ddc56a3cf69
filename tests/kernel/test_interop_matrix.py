"""Issue 4: every server/relay/client mix of Debian's miredo and our engine, every lab path.

One test per combination (the id names it, e.g. `srvO-rlyD-cliO-cli2D-restricted`), one
fresh lab each.  Behind two restricted NATs every path must pass, as it does with miredo
alone; with NAT 2 symmetric every path must do at least as well as all-Debian did in the
same run (miredo cannot punch client-to-client through a symmetric NAT, and the all-Debian
row itself must show exactly that).  The RFC 6081 rows (issue 16: NAT 2 a sequential or a
port-preserving symmetric NAT, or `shared`, cli2 behind NAT 1 too without hairpinning) hold
our engine on both clients to every path passing, and any row with miredo on either end to
doing at least as well as miredo everywhere.  Every daemon must then exit 0 on SIGTERM and leave no
Teredo address behind.  The whole matrix is printed as one table at the end of the run
(tests/kernel/conftest.py, `pytest_terminal_summary`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel.matrix import COMBOS, Combo, ComboRun, ensure_baseline, judge, run_combo
from tests.kernel.paths import format_table

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("combo", COMBOS, ids=[c.id for c in COMBOS])
def test_combination(combo: Combo, debian_miredo, lab_factory, run_dir, capsys) -> None:
    def fresh(c: Combo, d: Path) -> ComboRun:
        d.mkdir(exist_ok=True)  # short paths: a unix socket path has at most 107 bytes
        return run_combo(lab_factory(nat2_type=c.nat2), d, c)

    base = None
    if combo.nat2 != "restricted" and not combo.all_debian:
        base = ensure_baseline(combo.nat2,
                               lambda: fresh(Combo("DDDD", combo.nat2), run_dir / "base"))
    run = fresh(combo, run_dir)  # all-Debian rows are judged against miredo's known verdicts
    with capsys.disabled():
        q = ", ".join(f"{r} {s:.3f}s" for r, s in run.qualify.items())
        print(f"\n{combo.id} ({combo.why}): qualification {q}\n{format_table(run.rows)}",
              flush=True)
    problems = judge(run, base)
    assert not problems, f"{combo.id}:\n  " + "\n  ".join(problems) + "\n" + run.logs
