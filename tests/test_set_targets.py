"""scripts/set_targets.py: targets from the seeds' best values, budget from steps to target."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scripts.set_targets import _chosen, _propose, _round_easier


def _workload(direction: str) -> SimpleNamespace:
    def meets(value, target):
        return value <= target if direction == "min" else value >= target

    return SimpleNamespace(name="w", target_metric_name="error", metric_direction=direction, step_hint=100,
                           meets_target=meets)


def _seed(values: list[float], seconds_per_step: float = 0.1) -> dict:
    rows = [{"global_step": 10 * (i + 1), "validation/error": v, "test/error": v + 0.01,
             "accumulated_submission_time": 10 * (i + 1) * seconds_per_step} for i, v in enumerate(values)]
    return {"best_validation": min(values), "best_test": min(values) + 0.01, "evals": rows}


@pytest.mark.parametrize("value, direction, expected", [
    (0.29271, "min", 0.293), (0.2930, "min", 0.293), (6.6590, "min", 6.66), (0.73129, "max", 0.731), (23.47, "max", 23.4),
])
def test_targets_round_to_three_digits_towards_the_easier_side(value, direction, expected):
    assert _round_easier(value, direction) == pytest.approx(expected, abs=1e-12)


def test_median_rule_and_budget_from_the_slowest_seed_that_reaches_the_target():
    seeds = {"0": _seed([0.5, 0.30, 0.21]), "1": _seed([0.5, 0.25, 0.20]), "2": _seed([0.5, 0.40, 0.35], 0.2)}
    proposal = _propose(_workload("min"), seeds, "median", None)
    assert proposal["validation_target_value"] == pytest.approx(0.21)  # median of 0.21, 0.20, 0.35
    assert proposal["test_target_value"] == pytest.approx(0.22)
    assert proposal["steps_to_target_per_seed"] == [30, 30]  # seed 2 never reaches 0.21
    assert proposal["seconds_per_step"] == pytest.approx(0.1)  # the fastest run's
    assert proposal["max_allowed_runtime_sec"] == 10  # 1.5 x 30 steps x 0.1 s = 4.5 s, rounded up to 10 s


def test_worst_rule_lets_every_seed_reach_the_target_and_a_quiet_figure_sets_the_budget():
    seeds = {"0": _seed([0.5, 0.30, 0.21]), "1": _seed([0.5, 0.25, 0.20]), "2": _seed([0.5, 0.40, 0.35] + [0.34] * 20)}
    proposal = _propose(_workload("min"), seeds, "worst", seconds_per_step=2.0)
    assert proposal["validation_target_value"] == pytest.approx(0.34)
    assert proposal["steps_to_target_per_seed"] == [20, 20, 40]
    assert proposal["steps_to_target_cv"] == pytest.approx(0.433, abs=1e-3)  # sample std 11.55 / mean 26.67
    assert proposal["max_allowed_runtime_sec"] == 120  # 1.5 x 40 x 2.0


def test_tuning_keeps_the_point_with_the_best_final_value():
    tuning = {"1": {"final_validation": 0.3}, "2": {"final_validation": 0.2}, "3": {"final_validation": 0.25}}
    assert _chosen(_workload("min"), tuning) == 2
    assert _chosen(_workload("max"), tuning) == 1
