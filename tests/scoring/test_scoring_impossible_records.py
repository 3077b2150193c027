"""Impossible evaluation rows are bad records, named by file and line; measurements that merely
never reach the target (NaN, a loss of +∞) are not.

Decisions (scoring/eval_rows.py, `impossible_rows`): a missing, negative or non-finite
`accumulated_submission_time` or `global_step` is impossible, and so is one that decreases
without a preemption in between (AlgoPerf appends the rows of a resumed run, which can go back
to its checkpoint); a target metric of -∞ for a 'min' target (+∞ for 'max') would meet any
target, so it is impossible too. NaN (a diverged evaluation) and +∞ for 'min' (-∞ for 'max') are
measurements: they never reach the target. A target in meta.json must be finite.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from scoring import RunRecordError, algoperf_targets, load_runs, trial_results
from scoring.report import main

INF = math.inf
_criteo = algoperf_targets("0.6").get("criteo1tb")  # a 'min' workload of AlgoPerf's
CRITEO = {"target": _criteo.validation_target, "direction": _criteo.direction, "metric": _criteo.validation_metric}


def _set(rows, index, **values):
    rows[index].update(values)
    return rows


def _resumed(rows):
    """A resumed AlgoPerf run: from row 2 on, preemption_count 1 and the time back below row 1's."""
    for row in rows[2:]:
        row["preemption_count"] = 1
    return _set(rows, 2, accumulated_submission_time=3.0)


# (layout, direction, change to the rows, line named, problem) -- the line counts a CSV's header
IMPOSSIBLE = [
    ("timetrial", "min", lambda r: _set(r, 1, **{"validation/error_rate": -INF}), 2,
     "validation/error_rate is -inf, which would meet any 'min' target"),
    ("timetrial", "max", lambda r: _set(r, 2, **{"validation/error_rate": INF}), 3,
     "validation/error_rate is inf, which would meet any 'max' target"),
    ("timetrial", "min", lambda r: _set(r, 0, accumulated_submission_time=-10.0), 1,
     "accumulated_submission_time is -10.0; it must be a finite number >= 0"),
    ("timetrial", "min", lambda r: _set(r, 3, accumulated_submission_time=INF), 4,
     "accumulated_submission_time is inf; it must be a finite number >= 0"),
    ("timetrial", "min", lambda r: _set(r, 2, accumulated_submission_time=3.0), 3,
     "accumulated_submission_time 3.0 is less than the previous row's 4.0, with no preemption between"),
    ("timetrial", "min", lambda r: _set(r, 2, global_step=1), 3,
     "global_step 1.0 is less than the previous row's"),
    ("algoperf", "min", lambda r: _set(r, 0, accumulated_submission_time=-10.0), 2,
     "accumulated_submission_time is -10.0; it must be a finite number >= 0"),
    ("algoperf", "min", lambda r: _set(r, 1, accumulated_submission_time=None), 3, "no accumulated_submission_time"),
    ("algoperf", "min", lambda r: _set(r, 4, global_step=None), 6, "no global_step"),
    ("algoperf", "min", lambda r: _set(r, 1, **{"validation/loss": -INF}), 3,
     "validation/loss is -inf, which would meet any 'min' target"),
    ("algoperf", "min", lambda r: _set(r, 2, accumulated_submission_time=1.0), 4,
     "accumulated_submission_time 1.0 is less than the previous row's 4.0, with no preemption between"),
]


def write_bad_trial(records, layout, direction, change):
    """A good trial and, beside it, one whose rows went through `change` (both first reach the
    target at 30 s; rows 0 and 1 at 2 s and 4 s); returns the changed trial's evaluation file."""

    def rows():
        kwargs = {"direction": direction} if layout == "timetrial" else CRITEO
        return _set(_set(records.reaching(30.0, **kwargs), 0, accumulated_submission_time=2.0), 1,
                    accumulated_submission_time=4.0)

    if layout == "timetrial":
        records.timetrial("good", "w", 0, 0, rows(), direction=direction)
        return records.timetrial("bad", "w", 0, 0, change(rows()), direction=direction) / "eval.jsonl"
    records.algoperf("good", "criteo1tb", 0, 1, rows())
    return records.algoperf("bad", "criteo1tb", 0, 1, change(rows())) / "eval_measurements.csv"


@pytest.mark.parametrize("layout, direction, change, line, problem", IMPOSSIBLE)
def test_impossible_row_is_an_error_naming_file_and_line(records, tmp_path, layout, direction, change, line, problem):
    path = write_bad_trial(records, layout, direction, change)
    with pytest.raises(RunRecordError) as error:
        load_runs([tmp_path])
    assert error.value.path == str(path)
    assert str(error.value).startswith(f"{path}: line {line}: {problem}")


@pytest.mark.parametrize("layout, direction, change, line, problem", IMPOSSIBLE)
def test_impossible_row_skips_its_trial_with_a_warning_when_asked(
    records, tmp_path, layout, direction, change, line, problem
):
    path = write_bad_trial(records, layout, direction, change)
    with pytest.warns(UserWarning, match="trial skipped"):
        runs = load_runs([tmp_path], on_error="warn")
    assert list(runs.trials["submission"].astype(str)) == ["good"]
    assert set(runs.evals["submission"].astype(str)) == {"good"} and runs.evals["trial_id"].max() == 0
    assert any(w.startswith(f"{path}: line {line}: {problem}") for w in runs.warnings)


@pytest.mark.parametrize(
    "layout, change",
    [
        ("timetrial", lambda r: _set(r, 1, **{"validation/error_rate": math.nan})),  # diverged
        ("timetrial", lambda r: _set(r, 1, **{"validation/error_rate": INF})),  # overflow: worst possible
        ("algoperf", lambda r: _set(r, 1, **{"validation/loss": INF})),
        ("algoperf", lambda r: _set(r, 1, **{"validation/loss": None})),
        ("timetrial", lambda r: _set(r, 1, accumulated_submission_time=2.0)),  # equal times
        ("algoperf", _resumed),
    ],
)
def test_measurements_that_never_reach_the_target_are_not_bad(records, tmp_path, layout, change):
    """NaN and the worst infinity are kept: those rows do not reach the target, the rest score."""
    write_bad_trial(records, layout, "min", change)
    results = trial_results(load_runs([tmp_path])).set_index("submission")
    assert results.loc["bad", "time_to_target"] == 30.0 == results.loc["good", "time_to_target"]


def test_a_row_that_never_reaches_is_not_counted_as_reached(records, tmp_path):
    rows = _set(records.curve([10.0, 20.0], [0.5, 0.5]), 1, **{"validation/error_rate": INF})
    records.timetrial("a", "w", 0, 0, rows)
    result = trial_results(load_runs([tmp_path])).iloc[0]
    assert not result["reached"] and result["time_to_target"] == INF and result["best_validation"] == 0.5


@pytest.mark.parametrize("value", [math.nan, INF, -INF])
def test_non_finite_target_in_meta_json(records, tmp_path, value):
    d = records.timetrial("a", "w", 0, 0, records.reaching(30.0))
    meta = json.loads((d / "meta.json").read_text())
    meta["validation_target_value"] = value
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunRecordError, match="validation_target_value must be a finite number"):
        load_runs([tmp_path])


def test_report_refuses_minus_infinity_and_scores_without_it_when_asked(records, tmp_path, capsys):
    """The audit's case: a -Infinity metric made its trial the leader with score 1.0."""
    for study in range(2):
        records.timetrial("honest", "w", study, 0, records.reaching(30.0))
        records.timetrial("cheat", "w", study, 0, records.curve([1.0, 2.0], [-INF, -INF]))
    bad = records.root / "exp" / "w_pytorch" / "cheat" / "study_0" / "trial_0" / "eval.jsonl"
    out = tmp_path / "report"
    assert main([str(records.root), "--out", str(out), "--bootstrap", "10"]) == 1
    err = capsys.readouterr().err
    assert err == f"python -m scoring.report: error: {bad}: line 1: validation/error_rate is -inf, " \
                  "which would meet any 'min' target\n"
    assert main([str(records.root), "--out", str(out), "--bootstrap", "10", "--skip_bad_records"]) == 0
    assert f"warning: {bad}: line 1: validation/error_rate is -inf" in capsys.readouterr().err
    scores = pd.read_csv(out / "scores.csv").set_index("entry")["score"]
    assert list(scores.index) == ["honest"] and scores["honest"] == 1.0
