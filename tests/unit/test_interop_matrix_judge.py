"""The interop matrix's verdicts (tests/kernel/matrix.py) without a kernel: a combination
fails exactly when it does worse than it must, and the table shows every path."""

from __future__ import annotations

import pytest

from tests.kernel.harness import PingResult
from tests.kernel.matrix import COMBOS, Combo, ComboRun, format_matrix, judge
from tests.kernel.paths import PATHS, PathResult

OK = PingResult(5, 5, 0.1, 0.25, 0.4)
SOME = PingResult(5, 3, 0.1, 0.3, 0.5)
NONE = PingResult(5, 0, None, None, None)
C2C = [i for i, p in enumerate(PATHS) if {p.src, p.dst} == {"cli", "cli2"}]


def run(combo: Combo, results: list[PingResult], **kw) -> ComboRun:
    r = ComboRun(combo, qualify={"cli": 0.1, "cli2": 0.2})
    r.rows = [PathResult(p, "2001:db8::1", res) for p, res in zip(PATHS, results, strict=True)]
    r.exit_codes = kw.get("codes", {"server": 0, "relay": 0})
    r.left_behind = kw.get("left", [])
    return r


def symmetric_baseline() -> ComboRun:
    return run(Combo("DDDD", "symmetric"), [NONE if i in C2C else OK for i in range(8)])


def test_restricted_needs_every_path():
    assert judge(run(Combo("OOOO"), [OK] * 8), None) == []
    bad = judge(run(Combo("OOOO"), [OK] * 7 + [SOME]), None)
    assert len(bad) == 1 and bad[0].startswith(PATHS[7].name + ": PARTIAL 3/5")


def test_symmetric_is_judged_against_miredo_path_by_path():
    base = symmetric_baseline()
    same = run(Combo("OOOO", "symmetric"), [r.result for r in base.rows])
    assert judge(same, base) == []
    better = run(Combo("OOOO", "symmetric"), [OK] * 8)  # ours may beat miredo
    assert judge(better, base) == []
    worse = [r.result for r in base.rows]
    worse[2] = SOME
    problems = judge(run(Combo("OOOO", "symmetric"), worse), base)
    assert problems == [f"{PATHS[2].name}: PARTIAL {SOME.summary()} but miredo PASS "
                        f"{OK.summary()}"]


def test_all_debian_symmetric_is_pinned_to_miredos_known_verdicts():
    assert judge(symmetric_baseline(), None) == []
    assert judge(symmetric_baseline(), symmetric_baseline()) == []
    punched = run(Combo("DDDD", "symmetric"), [OK] * 8)  # would mean the lab lost its NAT
    assert [p.split(":")[0] for p in judge(punched, None)] == [PATHS[i].name for i in C2C]
    relay_broken = [r.result for r in symmetric_baseline().rows]
    relay_broken[0] = SOME
    assert len(judge(run(Combo("DDDD", "symmetric"), relay_broken), None)) == 1


def test_unclean_exit_and_leftovers_fail():
    r = run(Combo("DODD"), [OK] * 8, codes={"relay": 1}, left=["rly: teredo still has an address"])
    assert judge(r, None) == ["relay exited with status 1 on SIGTERM",
                              "rly: teredo still has an address"]


def test_missing_paths_fail():
    r = run(Combo("OOOO"), [OK] * 8)
    r.rows = r.rows[:3]
    assert any("not every path was run" in p for p in judge(r, None))


def test_table_has_a_row_per_combination_and_a_cell_per_path():
    base = symmetric_baseline()
    ours = run(Combo("OOOO", "symmetric"), [OK] * 7 + [SOME])
    text = format_matrix([base, ours])
    lines = text.splitlines()
    assert lines[2].split()[:6] == ["D", "D", "D", "D", "symmetric", "0.100/0.200"]
    assert lines[2].split()[-1] == "ok" and lines[3].split()[-1] == "BAD"
    assert lines[3].split()[-3:] == ["3/5", "0.30", "BAD"]
    assert lines[2].count("FAIL") == len(C2C)
    for i, p in enumerate(PATHS, 1):
        assert f"P{i}: {p.name}" in text


def test_combinations_are_valid_and_unique():
    assert len({c.id for c in COMBOS}) == len(COMBOS)
    for roles in ("DDDD", "OOOO"):
        for nat in ("restricted", "symmetric"):
            assert Combo(roles, nat) in [Combo(c.roles, c.nat2) for c in COMBOS]
    with pytest.raises(ValueError, match="four letters"):
        Combo("DDX")
