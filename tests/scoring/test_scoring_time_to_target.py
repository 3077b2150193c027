"""Time-to-target per trial, the trial that counts in a study, and the median over studies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring import load_runs, median_over_studies, study_results, trial_results


def _trials(tmp_path):
    return trial_results(load_runs([tmp_path]))


def test_first_evaluation_meeting_the_target(records, tmp_path):
    # min metric: the target 0.1 is met first at the 3rd evaluation (0.1 <= 0.1 counts)
    records.timetrial("a", "w", 0, 0, records.curve([5, 10, 15, 20], [0.5, 0.2, 0.1, 0.05], steps=[10, 20, 30, 40]))
    # max metric: NaN never counts, the first value >= 0.8 is at t=30
    records.timetrial(
        "a",
        "acc",
        0,
        0,
        records.curve([10, 20, 30], [math.nan, 0.9, 0.95], metric="validation/accuracy"),
        metric="accuracy",
        direction="max",
        target=0.8,
    )
    records.timetrial(
        "a",
        "acc",
        0,
        1,
        records.curve([10, 20], [math.nan, math.nan], metric="validation/accuracy"),
        metric="accuracy",
        direction="max",
        target=0.8,
    )
    t = _trials(tmp_path).set_index(["workload", "trial"])
    assert t.loc[("w", 0), "time_to_target"] == 15 and t.loc[("w", 0), "steps_to_target"] == 30
    assert t.loc[("w", 0), "first_index"] == 2 and t.loc[("w", 0), "best_validation"] == 0.05
    assert t.loc[("acc", 0), "time_to_target"] == 20 and t.loc[("acc", 0), "first_index"] == 1
    assert math.isinf(t.loc[("acc", 1), "time_to_target"]) and not t.loc[("acc", 1), "reached"]
    assert np.isnan(t.loc[("acc", 1), "best_validation"])


def test_exact_takes_fastest_trial_algoperf_takes_earliest_evaluation(records, tmp_path):
    # trial 0 reaches the target at its 2nd evaluation but slowly (t=100);
    # trial 1 at its 4th evaluation, quickly (t=40). Exact counts 40, AlgoPerf counts 100.
    records.timetrial("a", "w", 0, 0, records.curve([50, 100, 150], [0.5, 0.05, 0.05]))
    records.timetrial("a", "w", 0, 1, records.curve([10, 20, 30, 40], [0.5, 0.4, 0.3, 0.05]))
    trials = _trials(tmp_path)
    exact = study_results(trials, "exact").iloc[0]
    algoperf = study_results(trials, "algoperf").iloc[0]
    assert (exact["time"], exact["time_trial"]) == (40, 1)
    assert (algoperf["time"], algoperf["time_trial"]) == (100, 0)


def test_tie_on_first_index_goes_to_the_smaller_time_then_the_lowest_trial(records, tmp_path):
    """AlgoPerf mode: trials 1 and 2 both first meet the target at evaluation 1; trial 2 is
    faster (20 s against 22 s), so it counts, time and steps alike, whatever the trial numbers or
    the directory order (AlgoPerf takes whichever os.listdir returns first). An equal time goes
    to the lower trial number. Trial 0 is faster still but one evaluation later."""
    records.timetrial("a", "w", 0, 0, records.curve([4, 8, 12], [0.5, 0.5, 0.05], steps=[1, 2, 3]))
    records.timetrial("a", "w", 0, 2, records.curve([10, 20], [0.5, 0.05], steps=[300, 700]))
    records.timetrial("a", "w", 0, 1, records.curve([11, 22], [0.5, 0.05], steps=[200, 400]))
    records.timetrial("a", "w", 1, 3, records.curve([10, 30], [0.5, 0.05], steps=[100, 500]))
    records.timetrial("a", "w", 1, 4, records.curve([10, 30], [0.5, 0.05], steps=[100, 300]))
    studies = study_results(_trials(tmp_path), "algoperf").set_index("study")
    assert studies.loc[0, ["time", "time_trial", "steps", "steps_trial"]].tolist() == [20, 2, 700, 2]
    assert studies.loc[1, ["time", "time_trial", "steps", "steps_trial"]].tolist() == [30, 3, 500, 3]


def test_study_where_no_trial_reaches_is_infinite(records, tmp_path):
    records.timetrial("a", "w", 0, 0, records.reaching(math.inf))
    records.timetrial("a", "w", 0, 1, records.reaching(math.inf))
    for mode in ("exact", "algoperf"):
        row = study_results(_trials(tmp_path), mode).iloc[0]
        assert math.isinf(row["time"]) and not row["reached"] and row["n_trials"] == 2


@pytest.mark.parametrize(
    "times, expected",
    [
        ([10, 30, 20], 20),
        ([10, 20, 30, 40], 25),
        ([10, math.inf, math.inf], math.inf),
        ([10, 20, math.inf, math.inf], math.inf),
    ],
)
def test_median_over_studies_counts_infinity(records, tmp_path, times, expected):
    for k, t in enumerate(times):
        records.timetrial("a", "w", k, 0, records.reaching(t))
    table = median_over_studies(study_results(_trials(tmp_path)))
    assert table.loc["a", "w"] == expected


def test_missing_studies_median_of_present_or_infinite_when_expected(records, tmp_path):
    for k, t in enumerate([10, 20, 30]):
        records.timetrial("a", "w", k, 0, records.reaching(t))
    studies = study_results(_trials(tmp_path))
    assert median_over_studies(studies).loc["a", "w"] == 20
    assert median_over_studies(studies, expected_studies=5).loc["a", "w"] == 30  # [10, 20, 30, ∞, ∞]


def test_summary_disagreement_is_flagged(records, tmp_path):
    records.timetrial("a", "w", 0, 0, records.reaching(30.0), summary={"status": "reached", "time_to_target": 30.0})
    records.timetrial("a", "w", 0, 1, records.reaching(30.0), summary={"status": "reached", "time_to_target": 25.0})
    records.timetrial("a", "w", 0, 2, records.reaching(30.0), summary={"status": "running", "time_to_target": None})
    agrees = _trials(tmp_path).set_index("trial")["summary_agrees"]
    assert agrees.tolist() == [True, False, True]
