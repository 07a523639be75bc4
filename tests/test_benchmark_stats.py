"""The statistics behind BENCHMARKS.md's verdicts (benchmarks/_mirror.py, benchmarks/write_benchmarks_md.py):
a wrong pairing or interval here would publish a wrong conclusion."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _mirror import compare, pct, rate_ci, seed_ci, signed_pct  # noqa: E402

from mirroralign.stats import proportion_ci  # noqa: E402
from write_benchmarks_md import bound, verdict  # noqa: E402


def test_seed_ci_is_the_student_t_interval():
    x = [0.40, 0.45, 0.38]
    ci = seed_ci(x)
    half = sps.t.ppf(0.975, 2) * np.std(x, ddof=1) / np.sqrt(3)
    assert ci["mean"] == pytest.approx(np.mean(x)) and ci["n"] == 3
    assert (ci["low"], ci["high"]) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert seed_ci([0.4, None, 0.5])["n"] == 2  # an unmeasured seed is left out, not counted as 0


@pytest.mark.parametrize("values,shown", [([0.5], "50.0 (1 seed, no CI)"),
                                          ([0.967, 0.967], "96.7 (same on all 2 seeds, no CI)"),
                                          # float32 rounding is no spread: 116/120 as two different sums give
                                          ([0.9666666388511658, 0.9666667], "96.7 (same on all 2 seeds, no CI)")])
def test_no_spread_gives_no_interval(values, shown):
    ci = seed_ci(values)
    assert ci["low"] is None and ci["high"] is None and pct(ci) == shown


def test_intervals_are_shown_clipped_to_what_a_percentage_can_be():
    assert pct(seed_ci([0.9, 1.0, 0.98])).endswith(", 100.0]")
    assert signed_pct(seed_ci([0.9, -0.9])) == "+0.0 [-100.0, +100.0]"


def _arm(success: float, recognition: float, outcomes: list[bool]) -> dict:
    return {"success": success, "recognition": recognition, "_rollout_outcomes": outcomes}


def test_compare_pairs_by_seed():
    baseline = [_arm(0.40, 0.9, [True, False]), _arm(0.20, 0.8, [False, False])]
    mirror = [_arm(0.50, 0.9, [True, True]), _arm(0.25, 0.8, [False, True])]
    c = compare(baseline, mirror)
    assert set(c) == {"success", "recognition", "success_pooled"}  # "_" keys are not compared
    assert c["success"]["difference"]["per_seed"] == pytest.approx([0.10, 0.05])
    assert c["success"]["baseline"]["per_seed"] == [0.40, 0.20]
    assert c["recognition"]["difference"]["low"] is None  # identical on both seeds
    pooled = c["success_pooled"]
    assert pooled["baseline"]["mean"] == 0.25 and pooled["treatment"]["mean"] == 0.75
    assert pooled["difference"]["mean"] == 0.5 and pooled["baseline"]["n"] == 4
    outcomes = [True, False, False, True, True]  # the benchmark's copy of the library's Wilson interval
    assert rate_ci(outcomes) == proportion_ci(outcomes)


@pytest.mark.parametrize("diff,expected", [
    ({"mean": 0.1, "low": 0.02, "high": 0.18, "n": 3}, "higher"),
    ({"mean": -0.1, "low": -0.18, "high": -0.02, "n": 3}, "lower"),
    ({"mean": 0.02, "low": -0.1, "high": 0.14, "n": 3}, "no difference detected"),
    ({"mean": 0.1, "low": None, "high": None, "n": 1}, "undecided (fewer than 2 seeds)"),
    ({"mean": 0.1, "low": None, "high": None, "n": 3}, "undecided (no spread"),
    ({"mean": 0.0, "low": None, "high": None, "n": 3}, "no difference (identical"),
])
def test_verdict_follows_the_interval(diff, expected):
    assert verdict(diff).startswith(expected)


def test_bound_flags_ceiling_and_floor():
    assert "ceiling" in bound({"mean": 0.97}) and "floor" in bound({"mean": 0.02}) and bound({"mean": 0.5}) == ""
