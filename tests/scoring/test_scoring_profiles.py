"""Ratios, profiles and the benchmark score, on small time tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring import benchmark_scores, held_out_rule, performance_profile, performance_ratios, score_exact, score_grid
from scoring.profiles import profile_steps, trapezoid

INF = math.inf


def test_ratios_divide_by_the_fastest_and_keep_infinity():
    t = np.array([[10.0, INF, 5.0], [20.0, INF, np.nan]])
    r = performance_ratios(t)
    assert r.tolist() == [[1.0, INF, 1.0], [2.0, INF, INF]]


def test_unsolved_workload_stays_in_the_denominator():
    # w2 solved by nobody: the best any entry can score is 2 of 3 workloads.
    t = np.array([[10.0, INF, 30.0], [20.0, INF, 30.0]])
    scores, _ = benchmark_scores(t, ["w1", "w2", "w3"], ["w1", "w2", "w3"])
    assert scores[0] == pytest.approx(2 / 3)
    assert scores[1] == pytest.approx(((4 - 2) + (4 - 1)) / (3 * 3))


def test_ties_share_ratio_one_and_single_submission_scores_solved_fraction():
    t = np.array([[10.0, 7.0], [10.0, 14.0]])
    scores, ratios = benchmark_scores(t, ["a", "b"], ["a", "b"])
    assert ratios[:, 0].tolist() == [1.0, 1.0]
    assert scores[0] == pytest.approx(1.0)
    alone, _ = benchmark_scores(np.array([[3.0, INF, 9.0]]), ["a", "b", "c"], ["a", "b", "c"])
    assert alone[0] == pytest.approx(2 / 3)


def test_exact_score_is_the_integral_of_the_step_profile():
    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, size=(5, 7))
    t[rng.random(t.shape) < 0.2] = INF
    r = performance_ratios(t)
    exact = score_exact(r, 7, 4.0)
    taus = np.linspace(1, 4, 300_001)
    numeric = trapezoid(performance_profile(r, taus, 7), taus, axis=-1) / 3
    assert np.allclose(exact, numeric, atol=1e-4)


def test_grid_score_is_algoperf_trapezoid_on_100_points():
    r = np.array([[1.0, 2.0, 3.9, INF]])
    taus = np.linspace(1, 4, 100)
    rho = [(sum(x <= tau for x in r[0])) / 4 for tau in taus]
    expected = sum((taus[i + 1] - taus[i]) * (rho[i] + rho[i + 1]) / 2 for i in range(99)) / 3
    assert score_grid(r, 4)[0] == pytest.approx(expected, abs=1e-15)
    # the grid rounds ratio 2.0 down to the next grid point; the exact integral does not
    assert score_exact(r, 4)[0] == pytest.approx((3 + 2 + 0.1) / 12)


def test_ratio_above_r_max_gets_no_credit():
    t = np.array([[10.0], [41.0], [40.0]])
    scores, _ = benchmark_scores(t, ["w"], ["w"])
    assert scores.tolist() == [1.0, 0.0, 0.0]
    scores, _ = benchmark_scores(t, ["w"], ["w"], r_max=5.0)
    assert scores[1] == pytest.approx((5 - 4.1) / 4)


def test_held_out_rule_three_steps():
    workloads = ["base", "variant"]
    held = {"variant": "base"}
    t = np.array(
        [
            [10.0, 100.0],  # variant 100 > 4 x 20: base disqualified
            [12.0, 20.0],  # fine
            [INF, 5.0],  # base not reached: variant ignored (not the fastest on the variant)
            [15.0, np.nan],  # variant not run: base disqualified
        ]
    )
    out = held_out_rule(t, workloads, held, 4.0)
    assert out[:, 0].tolist() == [INF, 12.0, INF, INF]
    assert out[2, 1] == INF
    scores, ratios = benchmark_scores(t, workloads, ["base"], held_out=held)
    assert ratios[:, 0].tolist() == [INF, 1.0, INF, INF]


def test_batched_times_score_like_one_at_a_time():
    rng = np.random.default_rng(1)
    batch = rng.uniform(1, 10, size=(6, 3, 4))
    batch[0, 1, 2] = INF
    together, _ = benchmark_scores(batch, list("abcd"), list("abc"), mode="algoperf")
    one_by_one = np.array([benchmark_scores(b, list("abcd"), list("abc"), mode="algoperf")[0] for b in batch])
    assert np.array_equal(together, one_by_one)


def test_profile_steps_breakpoints():
    x, y = profile_steps(np.array([1.0, 2.5, INF, 5.0]), 4, 4.0)
    assert x.tolist() == [1.0, 1.0, 2.5, 4.0]
    assert y.tolist() == [0.25, 0.25, 0.5, 0.5]


def test_bad_inputs():
    with pytest.raises(ValueError, match="r_max must be > 1"):
        benchmark_scores(np.ones((1, 1)), ["w"], ["w"], r_max=1.0)
    with pytest.raises(ValueError, match="not among the timed workloads"):
        benchmark_scores(np.ones((1, 1)), ["w"], ["w", "x"])
    with pytest.raises(ValueError, match="mode must be"):
        benchmark_scores(np.ones((1, 1)), ["w"], ["w"], mode="fast")
