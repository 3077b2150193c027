"""Bootstrap intervals, geometric-mean speedups and the significance test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring import ScoringConfig, bootstrap, compare, geometric_mean_speedup, holm, load_runs, score_runs
from scoring.stats import resample_medians

INF = math.inf


def test_resampled_medians_are_seeded_and_use_only_real_studies():
    values = {("a", "w"): np.array([1.0, 2.0, 3.0]), ("b", "w"): np.array([5.0])}
    one = resample_medians(values, ["a", "b", "c"], ["w"], 200, seed=3)
    two = resample_medians(values, ["a", "b", "c"], ["w"], 200, seed=3)
    assert np.array_equal(one, two)
    assert set(np.unique(one[:, 0, 0])) <= {1.0, 2.0, 3.0}
    assert np.all(one[:, 1, 0] == 5.0) and np.all(np.isinf(one[:, 2, 0]))
    assert not np.array_equal(one, resample_medians(values, ["a", "b", "c"], ["w"], 200, seed=4))


def test_even_number_of_studies_median_is_mean_of_middle_two():
    values = {("a", "w"): np.array([2.0, 4.0])}
    t = resample_medians(values, ["a"], ["w"], 400, seed=0)[:, 0, 0]
    assert set(np.unique(t)) == {2.0, 3.0, 4.0}


def test_interval_contains_estimate_and_shrinks_when_studies_agree():
    spread = {("a", "w"): np.array([10.0, 20.0, 30.0, 40.0, 50.0])}
    tight = {("a", "w"): np.array([29.0, 30.0, 30.0, 30.0, 31.0])}
    lo1, hi1 = bootstrap(spread, ["a"], ["w"], lambda t: t, n_resamples=500)
    lo2, hi2 = bootstrap(tight, ["a"], ["w"], lambda t: t, n_resamples=500)
    assert lo1[0, 0] <= 30 <= hi1[0, 0] and lo2[0, 0] <= 30 <= hi2[0, 0]
    assert hi2[0, 0] - lo2[0, 0] < hi1[0, 0] - lo1[0, 0]


def test_every_leaderboard_score_has_an_interval_around_it(records, tmp_path):
    for k, (ta, tb) in enumerate([(10, 12), (11, 30), (30, 13), (12, 14), (13, 15)]):
        records.timetrial("a", "w1", k, 0, records.reaching(ta))
        records.timetrial("b", "w1", k, 0, records.reaching(tb))
        records.timetrial("a", "w2", k, 0, records.reaching(2 * tb))
        records.timetrial("b", "w2", k, 0, records.reaching(2 * ta))
    runs = load_runs([tmp_path])
    board = score_runs(runs, ScoringConfig(), n_bootstrap=300, seed=5)
    again = score_runs(runs, ScoringConfig(), n_bootstrap=300, seed=5)
    t = board.table
    assert (t["score_low"] <= t["score"]).all() and (t["score"] <= t["score_high"]).all()
    assert (t["steps_score_low"] <= t["steps_score"]).all() and (t["steps_score"] <= t["steps_score_high"]).all()
    assert (t["score_high"] > t["score_low"]).any()
    assert t.equals(again.table)


def test_geometric_mean_speedup_with_budget_for_unreached():
    times = np.array([[10.0, 100.0, INF], [20.0, 50.0, INF], [5.0, INF, 30.0]])
    speedup, used = geometric_mean_speedup(times, reference=0, budgets=[1000.0, 1000.0, 999.0])
    assert speedup[0] == 1.0 and used.tolist() == [3, 3, 3]
    assert speedup[1] == pytest.approx((0.5 * 2.0 * 1.0) ** (1 / 3))
    assert speedup[2] == pytest.approx((2.0 * (100 / 1001) * (1000 / 30)) ** (1 / 3))
    # without budgets a workload with ∞ on either side is left out
    speedup, used = geometric_mean_speedup(times, reference=0)
    assert used.tolist() == [2, 2, 1] and speedup[2] == pytest.approx(2.0)


def test_mann_whitney_exact_permutation_p_values():
    c = compare([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], workload="w", a="A", b="B")
    assert c.p_value == pytest.approx(1 / 252) and c.prob_a_faster == 1.0
    c = compare([1, 2, 3], [4, INF, INF])  # ∞ = not reached ranks last
    assert c.p_value == pytest.approx(1 / 20)
    c = compare([INF, INF, INF], [INF, INF, INF])
    assert c.p_value == 1.0 and c.prob_a_faster == 0.5
    c = compare([50, 60, 70], [10, 20, 30])
    assert c.p_value == 1.0 and c.prob_a_faster == 0.0
    assert math.isnan(compare([], [1.0]).p_value)


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.5, math.nan])
    assert out[0] == 0.5 and math.isnan(out[1])


def test_comparisons_against_reference(records, tmp_path):
    for k in range(5):
        records.timetrial("fast", "w", k, 0, records.reaching(10 + k))
        records.timetrial("baseline", "w", k, 0, records.reaching(50 + k))
    board = score_runs(load_runs([tmp_path]), n_bootstrap=20)
    assert board.reference == "baseline"
    row = board.comparisons.set_index("a").loc["fast"]
    assert row["p_value"] == pytest.approx(1 / 252) and row["p_holm"] == pytest.approx(1 / 252)
    with pytest.raises(ValueError, match="reference entry 'nobody' not found"):
        score_runs(load_runs([tmp_path]), reference="nobody", n_bootstrap=5)


def test_compare_agrees_with_scipy_permutation_mann_whitney():
    from scipy import stats

    try:
        stats.mannwhitneyu([1, 2], [3, 4], alternative="less", method=stats.PermutationMethod())
    except (AttributeError, TypeError, ValueError):
        pytest.skip("this scipy's mannwhitneyu has no permutation method to compare with")
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, m = rng.integers(2, 6, size=2)
        x, y = np.round(rng.uniform(0, 5, n)), np.round(rng.uniform(0, 5, m))  # ties on purpose
        x[rng.random(n) < 0.2] = INF
        y[rng.random(m) < 0.2] = INF
        ours = compare(x, y)
        ref = stats.mannwhitneyu(x, y, alternative="less", method=stats.PermutationMethod(n_resamples=10**5))
        assert ours.u_statistic == pytest.approx(ref.statistic) and ours.p_value == pytest.approx(ref.pvalue)
    assert compare([3.0], [5.0]).p_value == 0.5  # one study each: defined, never significant
