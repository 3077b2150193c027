"""Quick checks of the benchmark scripts' logic (benchmarks/): intervals and verdicts, the ABBA
interleaving of the overhead benchmark on the toy workload, and the evaluation-share arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import evaluation_share, harness_overhead, timing_noise
from benchmarks.timing import INCONCLUSIVE, MEETS, MISSES, median_interval, verdict


@pytest.mark.parametrize(
    ("values", "goal", "expected"),
    [
        ([1.000, 1.005, 1.010, 0.995, 1.002, 1.008], 1.02, MEETS),
        ([1.030, 1.040, 1.035, 1.050, 1.045, 1.038], 1.02, MISSES),
        ([0.95, 1.10, 0.98, 1.06, 1.01, 1.04], 1.02, INCONCLUSIVE),
        ([2.4, 2.4, 2.4], 2.5, MEETS),  # every resample alike: the interval is the point
    ],
)
def test_verdict_follows_the_whole_interval(values, goal, expected):
    interval = median_interval(values)
    assert interval.low <= interval.median <= interval.high
    assert interval.median == pytest.approx(float(np.median(values)))
    assert verdict(interval, goal) == expected


def test_interval_is_seeded_and_refuses_too_few_values():
    values = [1.0, 1.2, 0.9, 1.1, 1.05]
    assert median_interval(values) == median_interval(values)
    with pytest.raises(ValueError, match="at least 2"):
        median_interval([1.0])


@pytest.mark.parametrize("blocks", [1, 2, 5, 6])
def test_abba_schedule_runs_each_bare_block_once_next_to_its_harness_block(blocks):
    schedule = harness_overhead.abba_schedule(blocks)
    assert len(schedule) == blocks + 1
    assert sorted(b for due in schedule for b in due) == list(range(blocks))
    for boundary, due in enumerate(schedule):
        for b in due:  # even pairs: bare after harness block b (boundary b+1); odd: before it (boundary b)
            assert boundary == (b + 1 if b % 2 == 0 else b)


def test_overhead_sides_do_the_same_training_in_paired_blocks(toy_workload):
    result = harness_overhead.measure(toy_workload, blocks=4, block_steps=2, clock_name="cpu")
    assert len(result["harness"]) == len(result["bare"]) == len(result["ratios"]) == 4
    assert all(seconds > 0 for seconds in result["harness"] + result["bare"])
    assert result["harness_loss"] == result["bare_loss"]


def test_predicted_evaluations_and_budget(toy_workload):
    budget, period = evaluation_share.budget_and_period(toy_workload, "self", 2.0)
    assert budget == toy_workload.max_allowed_runtime_sec * 1.5 * 2.0
    assert period == toy_workload.eval_period_time_sec * 2.0
    assert evaluation_share.evaluation_seconds(toy_workload, repeats=2) > 0


def test_measured_share_reads_the_last_row_of_each_trial(tmp_path):
    for index, (eval_time, duration) in enumerate([(10.0, 100.0), (30.0, 100.0)]):
        trial = tmp_path / "default" / "toy_pytorch" / "nadamw" / "study_0" / f"trial_{index + 1}"
        trial.mkdir(parents=True)
        (trial / "meta.json").write_text(json.dumps({"workload": "toy"}))
        rows = [{"accumulated_eval_time": 1.0, "total_duration": 5.0},
                {"accumulated_eval_time": eval_time, "total_duration": duration}]
        (trial / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert evaluation_share.measured_shares(tmp_path) == {"toy": [(10.0, 100.0), (30.0, 100.0)]}


def test_noise_summary_needs_two_seeds_that_reached():
    runs = [{"seed": 0, "wall": 1.0, "status": "reached", "time_to_target": 10.0, "steps_to_target": 100,
             "contended": False, "error": None},
            {"seed": 1, "wall": 1.0, "status": "budget", "time_to_target": None, "steps_to_target": None,
             "contended": None, "error": None}]
    lines = timing_noise.summarise("quiet", runs)
    assert lines[0] == "quiet: 1 of 2 seeds reached the target"
    assert "fewer than 2 seeds reached" in lines[-1]
    both = [runs[0], {**runs[0], "seed": 1, "time_to_target": 14.0, "steps_to_target": 100}]
    assert timing_noise.summarise("quiet", both)[-2:] == [
        "  time-to-target (timed s): mean 12, CV 0.236", "  steps-to-target: mean 100, CV 0.000"]
