"""Reading run records in both layouts, and refusing (or skipping) bad ones with clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scoring import RunRecordError, hyperparameters, load_runs


def test_timetrial_layout_becomes_one_row_per_evaluation(records, tmp_path):
    records.timetrial("adamw", "mnist", 0, 0, records.reaching(30.0), hparams={"lr": 0.1, "wd": 0.0}, hardware="hw1")
    records.timetrial(
        "adamw", "mnist", 0, 1, records.reaching(40.0, n=4, hit_index=2), hparams={"lr": 0.3, "wd": 0.1}, hardware="hw1"
    )
    runs = load_runs([tmp_path])
    e = runs.evals
    assert len(e) == 6 + 4 and len(runs.trials) == 2
    assert list(e["eval_index"]) == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    first = e.iloc[0]
    assert (first["submission"], first["workload"], first["framework"], first["study"], first["trial"]) == (
        "adamw",
        "mnist",
        "pytorch",
        0,
        0,
    )
    assert first["layout"] == "timetrial" and first["hardware"] == "hw1" and first["seed"] == 0
    assert json.loads(first["hparams"]) == {"lr": 0.1, "wd": 0.0}
    assert first["target_metric"] == "validation/error_rate" and first["direction"] == "min"
    assert e["accumulated_submission_time"].iloc[3] == 30.0
    assert {"train/loss", "validation/error_rate", "global_step", "accumulated_eval_time"} <= set(e.columns)
    hp = hyperparameters(runs)
    assert list(hp["lr"]) == [0.1, 0.3]


def test_algoperf_layout_reads_csv_hparams_seed_and_hardware(records, tmp_path):
    rows = records.reaching(50.0, target=30.8491, direction="max", metric="validation/bleu")
    records.algoperf("nadamw", "wmt", 2, 3, rows, hparams={"learning_rate": 1e-3}, hardware=("Xeon", "V100", 8))
    runs = load_runs([tmp_path])
    t = runs.trials.iloc[0]
    assert (t["submission"], t["workload"], t["framework"], t["study"], t["trial"]) == ("nadamw", "wmt", "jax", 2, 3)
    assert t["layout"] == "algoperf" and t["seed"] == 7
    assert t["target_metric"] == "validation/bleu" and t["validation_target"] == 30.8491 and t["direction"] == "max"
    assert t["hardware"] != "unknown" and "V100" in t["hardware_desc"]
    assert json.loads(t["hparams"]) == {"learning_rate": 1e-3}
    assert runs.evals["score"].tolist() == runs.evals["accumulated_submission_time"].tolist()


def test_both_layouts_in_one_table(records, tmp_path):
    records.timetrial("adamw", "mnist", 0, 0, records.reaching(30.0))
    records.algoperf(
        "nadamw",
        "ogbg",
        0,
        1,
        records.reaching(40.0, target=0.28098, direction="max", metric="validation/mean_average_precision"),
    )
    runs = load_runs([tmp_path])
    assert sorted(runs.trials["layout"].astype(str)) == ["algoperf", "timetrial"]
    assert runs.evals["trial_id"].is_monotonic_increasing


def test_null_and_nan_metrics_become_nan(records, tmp_path):
    rows = records.curve([1, 2, 3], [0.5, None, math.nan])
    records.timetrial("a", "w", 0, 0, rows)
    values = load_runs([tmp_path]).evals["validation/error_rate"].to_numpy()
    assert values[0] == 0.5 and np.isnan(values[1]) and np.isnan(values[2])


def test_timestamped_algoperf_workload_dir_and_submission_in_two_frameworks(records, tmp_path):
    rows = records.reaching(10.0, target=0.28098, direction="max", metric="validation/mean_average_precision")
    d = records.algoperf("sub", "ogbg", 0, 1, rows, framework="jax")
    d.parent.rename(d.parent.with_name("ogbg_jax-2024-01-02-03-04-05"))
    records.algoperf("sub", "ogbg", 0, 1, rows, framework="pytorch")
    runs = load_runs([tmp_path])
    assert sorted(runs.trials["entry"].astype(str)) == ["sub[jax]", "sub[pytorch]"]
    assert set(runs.trials["workload"].astype(str)) == {"ogbg"}


def test_truncated_last_line_is_an_error_naming_the_file(records, tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in records.reaching(30.0)) + '{"global_step": 7, "accumu'
    d = records.timetrial("a", "w", 0, 0, [], eval_text=text)
    with pytest.raises(RunRecordError, match=r"eval\.jsonl: truncated last line 7") as e:
        load_runs([tmp_path])
    assert e.value.path == str(d / "eval.jsonl")


def test_truncated_last_line_is_dropped_with_a_warning_when_asked(records, tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in records.reaching(30.0)) + '{"global_step": 7, "accumu'
    records.timetrial("a", "w", 0, 0, [], eval_text=text)
    with pytest.warns(UserWarning, match="truncated last line 7"):
        runs = load_runs([tmp_path], on_error="warn")
    assert len(runs.evals) == 6


def test_malformed_middle_line_names_the_line(records, tmp_path):
    rows = [json.dumps(r) for r in records.reaching(30.0)]
    rows[2] = "{not json"
    records.timetrial("a", "w", 0, 0, [], eval_text="\n".join(rows) + "\n")
    with pytest.raises(RunRecordError, match="malformed JSON on line 3"):
        load_runs([tmp_path])


def test_bad_trial_is_skipped_with_warning_and_the_rest_kept(records, tmp_path):
    records.timetrial("a", "w", 0, 0, records.reaching(30.0))
    bad = records.timetrial("a", "w", 0, 1, records.reaching(30.0))
    (bad / "meta.json").write_text('{"workload": "w"')
    with pytest.raises(RunRecordError, match=r"meta\.json: truncated meta\.json"):
        load_runs([tmp_path])
    with pytest.warns(UserWarning, match="trial skipped"):
        runs = load_runs([tmp_path], on_error="warn")
    assert len(runs.trials) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("target_metric_name"), "missing key"),
        (lambda m: m.update(metric_direction="up"), "metric_direction must be 'min' or 'max'"),
        (lambda m: m.update(validation_target_value="high"), "validation_target_value must be a number"),
    ],
)
def test_bad_meta_json(records, tmp_path, change, message):
    d = records.timetrial("a", "w", 0, 0, records.reaching(30.0))
    meta = json.loads((d / "meta.json").read_text())
    change(meta)
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunRecordError, match=message):
        load_runs([tmp_path])


def test_non_numeric_metric_and_missing_time(records, tmp_path):
    rows = records.reaching(30.0)
    rows[1]["validation/error_rate"] = "low"
    records.timetrial("a", "w", 0, 0, rows)
    with pytest.raises(RunRecordError, match="line 2: 'validation/error_rate' must be a number"):
        load_runs([tmp_path])
    rows = records.reaching(30.0)
    del rows[4]["accumulated_submission_time"]
    records.timetrial("a", "w", 0, 0, rows)
    with pytest.raises(RunRecordError, match="line 5 has no 'accumulated_submission_time'"):
        load_runs([tmp_path])


def test_bad_algoperf_csvs(records, tmp_path):
    metric = "validation/mean_average_precision"
    d = records.algoperf("s", "ogbg", 0, 1, records.reaching(30.0, target=0.28098, direction="max", metric=metric))
    path = d / "eval_measurements.csv"
    good = path.read_text()
    path.write_text(good + "1.0,2.0,3")
    with pytest.raises(RunRecordError, match="eval_measurements.csv: truncated last line 8"):
        load_runs([tmp_path])
    lines = good.splitlines()
    lines[3] = lines[3] + ",9"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunRecordError, match="line 4 has"):
        load_runs([tmp_path])
    path.write_text(good.replace(lines[2].split(",")[2], "fast", 1))
    with pytest.raises(RunRecordError, match="non-numeric value"):
        load_runs([tmp_path])
    path.write_text("")
    with pytest.raises(RunRecordError, match="empty file"):
        load_runs([tmp_path])


def test_unknown_algoperf_workload(records, tmp_path):
    records.algoperf("s", "mnist_like", 0, 1, records.reaching(30.0))
    with pytest.raises(RunRecordError, match="no AlgoPerf v0.6 target for workload 'mnist_like'") as error:
        load_runs([tmp_path])
    assert "; and no timetrial_target.json beside it" in str(error.value)


def test_duplicate_trials_are_refused(records, tmp_path):
    records.timetrial("a", "w", 0, 0, records.reaching(30.0), experiment="one")
    records.timetrial("a", "w", 0, 0, records.reaching(31.0), experiment="two")
    with pytest.raises(RunRecordError, match=r"duplicate trial \(a, w, study 0, trial 0\)"):
        load_runs([tmp_path])


def test_trial_without_evaluations_is_kept_and_empty_dir_skipped(records, tmp_path):
    d = records.timetrial("a", "w", 0, 0, [])
    (d / "eval.jsonl").unlink()
    (tmp_path / "exp" / "w_pytorch" / "a" / "study_0" / "trial_9").mkdir()
    with pytest.warns(UserWarning, match="not a trial"):
        runs = load_runs([tmp_path])
    assert len(runs.trials) == 1 and runs.trials["n_evals"].iloc[0] == 0 and runs.evals.empty


def test_missing_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory does not exist"):
        load_runs([tmp_path / "nope"])


def test_same_table_without_orjson_and_with_crlf_csv(records, tmp_path, monkeypatch):
    rows = records.curve([1, 2, 3], [0.5, math.nan, 0.05])
    rows[0]["train/loss"] = math.inf
    records.timetrial("a", "w", 0, 0, rows)
    d = records.algoperf(
        "s",
        "ogbg",
        0,
        1,
        records.reaching(30.0, target=0.28098, direction="max", metric="validation/mean_average_precision"),
    )
    csv_path = d / "eval_measurements.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b"\n", b"\r\n"))
    fast = load_runs([tmp_path]).evals
    monkeypatch.setattr("scoring.readers.orjson", None)
    plain = load_runs([tmp_path]).evals
    assert fast.equals(plain)
    assert math.isinf(plain["train/loss"].iloc[0]) and np.isnan(plain["validation/error_rate"].iloc[1])
    assert len(plain) == 3 + 6


def _target_file(trial_dir, **facts):
    """Write the timetrial_target.json that harness.export_algoperf writes beside a CSV."""
    facts = {"target_metric_name": "error_rate", "metric_direction": "min", "validation_target_value": 0.1, **facts}
    (trial_dir / "timetrial_target.json").write_text(json.dumps(facts))


def test_algoperf_layout_of_an_unknown_workload_takes_the_target_beside_the_csv(records, tmp_path):
    d = records.algoperf("s", "mnist_like", 0, 1, records.reaching(30.0))
    _target_file(d, workload="mnist_like", test_target_value=0.12, max_allowed_runtime_sec=160.0, budget_sec=90.0)
    (d / "flags_0.json").write_text(json.dumps({"tuning_ruleset": "self"}))  # no factor on a recorded budget
    t = load_runs([tmp_path]).trials.iloc[0]
    assert (t["target_metric"], t["direction"], t["validation_target"]) == ("validation/error_rate", "min", 0.1)
    assert (t["test_target"], t["max_runtime_sec"]) == (0.12, 90.0)


def test_algoperf_target_wins_over_a_different_recorded_one_with_one_warning(records, tmp_path):
    """AlgoPerf's published target (for the chosen version) scores AlgoPerf's workloads, so every
    run of a workload in AlgoPerf's layout is timed to the same target; a different recorded
    target is one warning line for all such trials."""
    metric = "validation/mean_average_precision"
    for study in range(2):
        rows = records.reaching(30.0, target=0.28098, direction="max", metric=metric)
        d = records.algoperf("s", "ogbg", study, 1, rows)
        _target_file(d, target_metric_name=metric.split("/")[1], metric_direction="max", validation_target_value=0.5)
    with pytest.warns(UserWarning) as caught:
        runs = load_runs([tmp_path], algoperf_version="0.6")
    assert set(runs.trials["validation_target"]) == {0.28098}
    assert len(caught) == 1 and str(caught[0].message).startswith(
        "2 trials in AlgoPerf's layout record a target other than AlgoPerf v0.6's, and are scored against AlgoPerf's"
    )
    assert "max 0.5, AlgoPerf's is validation/mean_average_precision max 0.28098" in str(caught[0].message)


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"metric_direction": "down"}, "metric_direction must be 'min' or 'max'"),
        ({"validation_target_value": math.inf}, "validation_target_value must be a finite number, got inf"),
        ({"budget_sec": -5}, "budget_sec must be positive"),
        ({"workload": "other"}, "is for workload 'other', but its directory is for 'mnist_like'"),
    ],
)
def test_bad_target_file_is_an_error_naming_it(records, tmp_path, facts, message):
    d = records.algoperf("s", "mnist_like", 0, 1, records.reaching(30.0))
    _target_file(d, **facts)
    with pytest.raises(RunRecordError, match=message) as error:
        load_runs([tmp_path])
    assert error.value.path == str(d / "timetrial_target.json")
