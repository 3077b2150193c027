"""`python -m harness.export_algoperf`: AlgoPerf's eval_measurements.csv, header and all.

The headers below are transcribed from AlgoPerf's own logs (mlcommons/submissions_algorithms,
commit 12c8e4ea, previous_leaderboards/algoperf_v05/logs/external_tuning/baseline/study_2/
<workload>_jax/trial_1/eval_measurements.csv, first line). AlgoPerf's logger
(algoperf/logger_utils.py, write_to_csv) sorts the header by name; `Workload.eval_model`
(algoperf/spec.py) adds validation/num_examples and test/num_examples to every evaluation.
"""

from __future__ import annotations

import csv
import json
import math

import pandas as pd
import pytest

from harness.export_algoperf import TARGET_FILE
from harness.export_algoperf import main as export_main
from harness.records import TrialRecord
from scoring.report import main as report_main

ALGOPERF_HEADERS = {
    "wmt": "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,"
    "preemption_count,score,test/accuracy,test/bleu,test/loss,test/num_examples,total_duration,"
    "train/accuracy,train/bleu,train/loss,validation/accuracy,validation/bleu,validation/loss,"
    "validation/num_examples",
    "ogbg": "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,"
    "preemption_count,score,test/accuracy,test/loss,test/mean_average_precision,test/num_examples,"
    "total_duration,train/accuracy,train/loss,train/mean_average_precision,validation/accuracy,"
    "validation/loss,validation/mean_average_precision,validation/num_examples",
    "criteo1tb": "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,"
    "preemption_count,score,test/loss,test/num_examples,total_duration,train/loss,validation/loss,"
    "validation/num_examples",
}
SIZES = {"num_validation_examples": 400, "num_test_examples": 300}
TARGET = {"target_metric_name": "loss", "metric_direction": "min", "validation_target_value": 0.2}


def eval_rows(metrics, n=3):
    """`n` evaluation rows as harness/trial.py writes them, with the given metric names."""
    return [
        {
            "global_step": 10 * (i + 1),
            "accumulated_submission_time": 1.5 * (i + 1),
            "accumulated_eval_time": 0.5 * (i + 1),
            "accumulated_logging_time": 0.01 * (i + 1),
            "total_duration": 2.25 * (i + 1),
            "preemption_count": 0,
            **{m: 0.1 * (i + 1) for m in metrics},
        }
        for i in range(n)
    ]


def write_trial(root, rows, meta, workload="toy", submission="algo", study=0, trial=1, target=TARGET):
    record = TrialRecord(root / "exp" / f"{workload}_pytorch" / submission / f"study_{study}" / f"trial_{trial}")
    record.write_meta({"workload": workload, "framework": "pytorch", "submission": submission, **target, **meta})
    for row in rows:
        record.add_eval(row)
    return exported_csv(root, workload, submission, study, trial)


def exported_csv(root, workload, submission, study, trial):
    trial_dir = root / "logs" / submission / f"study_{study}" / f"{workload}_pytorch" / f"trial_{trial}"
    return trial_dir / "eval_measurements.csv"


def export(root):
    return export_main([str(root / "exp"), "--out", str(root / "logs")])


@pytest.mark.parametrize("workload", sorted(ALGOPERF_HEADERS))
def test_header_is_algoperf_header(tmp_path, workload):
    """Rows with the metrics AlgoPerf measures on `workload` export to AlgoPerf's exact header,
    with validation/num_examples and test/num_examples on every row, score = submission time."""
    header = ALGOPERF_HEADERS[workload]
    metrics = [c for c in header.split(",") if "/" in c and not c.endswith("/num_examples")]
    path = write_trial(tmp_path, eval_rows(metrics), SIZES, workload=workload)
    assert export(tmp_path) == 0
    text = path.read_text()
    assert text.splitlines()[0] == header
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["validation/num_examples"] for r in rows] == ["400"] * 3
    assert [r["test/num_examples"] for r in rows] == ["300"] * 3
    assert [float(r["score"]) for r in rows] == [1.5, 3.0, 4.5]
    assert [r["score"] for r in rows] == [r["accumulated_submission_time"] for r in rows]


def test_no_train_bleu_unless_measured(tmp_path):
    """TimeTrial's bible_translation decodes only validation and test: no train/bleu column is
    made up (AlgoPerf's wmt has one because it decodes the train subset too)."""
    metrics = ["train/accuracy", "train/loss", "validation/accuracy", "validation/bleu", "validation/loss",
               "test/accuracy", "test/bleu", "test/loss"]
    path = write_trial(tmp_path, eval_rows(metrics), SIZES, workload="bible_translation")
    assert export(tmp_path) == 0
    header = path.read_text().splitlines()[0].split(",")
    assert header == [c for c in ALGOPERF_HEADERS["wmt"].split(",") if c != "train/bleu"]


def test_meta_without_sizes_exports_without_them_and_warns_once(tmp_path, capsys):
    """Records from before meta.json carried num_validation_examples/num_test_examples: exported
    without the num_examples columns, one warning line for all of them."""
    for study in range(2):
        write_trial(tmp_path, eval_rows(["validation/loss"]), {}, study=study)
    assert export(tmp_path) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: 2 trials' meta.json lack num_validation_examples")
    header = exported_csv(tmp_path, "toy", "algo", 1, 1).read_text().splitlines()[0]
    assert "num_examples" not in header and header.split(",") == sorted(header.split(","))


@pytest.mark.parametrize(
    "meta, eval_text, message",
    [
        ({"num_validation_examples": "400", "num_test_examples": 300}, None,
         "meta.json: num_validation_examples must be a positive integer, got '400'"),
        ({"num_validation_examples": 400, "num_test_examples": 0}, None,
         "meta.json: num_test_examples must be a positive integer, got 0"),
        (SIZES, '{"global_step": 1, "accumulated_submission_time": 1.0}\n{"global_st',
         "eval.jsonl: malformed JSON on line 2"),
        (SIZES, '{"global_step": 1}\n', "eval.jsonl: line 1 is not an evaluation row"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, capsys, meta, eval_text, message):
    write_trial(tmp_path, eval_rows(["validation/loss"]), SIZES, study=0)  # a good trial beside it
    write_trial(tmp_path, eval_rows(["validation/loss"]), meta, study=1)
    if eval_text is not None:
        (tmp_path / "exp" / "toy_pytorch" / "algo" / "study_1" / "trial_1" / "eval.jsonl").write_text(eval_text)
    assert export(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "logs").exists()


def test_meta_json_that_is_not_an_object(tmp_path, capsys):
    write_trial(tmp_path, eval_rows(["validation/loss"]), SIZES)
    (tmp_path / "exp" / "toy_pytorch" / "algo" / "study_0" / "trial_1" / "meta.json").write_text(json.dumps([1]))
    assert export(tmp_path) == 2
    assert "meta.json: must be a JSON object" in capsys.readouterr().err


def test_target_file_beside_each_csv_and_warning_without_a_target(tmp_path, capsys):
    """meta.json's target facts go to timetrial_target.json beside the CSV; a trial whose
    meta.json has no target gets no such file, and one warning line says so."""
    facts = {**TARGET, "test_target_value": 0.25, "max_allowed_runtime_sec": 160.0, "budget_sec": 90.0,
             "step_hint": 1800, "eval_period_time_sec": 10.0, "rng_seed": 3}
    path = write_trial(tmp_path, eval_rows(["validation/loss"]), {**SIZES, **facts}, study=0)
    bare = write_trial(tmp_path, eval_rows(["validation/loss"]), SIZES, study=1, target={})
    assert export(tmp_path) == 0
    assert json.loads((path.parent / TARGET_FILE).read_text()) == {
        "workload": "toy", "target_metric_name": "loss", "metric_direction": "min", "validation_target_value": 0.2,
        "test_target_value": 0.25, "max_allowed_runtime_sec": 160.0, "budget_sec": 90.0, "step_hint": 1800,
    }
    assert not (bare.parent / TARGET_FILE).exists() and bare.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: 1 trial's meta.json lacks a target")


def test_existing_target_file_is_not_replaced(tmp_path, capsys):
    path = write_trial(tmp_path, eval_rows(["validation/loss"]), SIZES)
    path.parent.mkdir(parents=True)
    (path.parent / TARGET_FILE).write_text("{}")
    assert export(tmp_path) == 2
    assert f"refusing to replace existing files: {path.parent / TARGET_FILE}" in capsys.readouterr().err
    assert not path.exists()


def mini_meta(submission, study, trial):
    """meta.json as harness/experiment.py `meta()` writes it, for a fashion_mnist trial."""
    return {
        "workload": "fashion_mnist", "workload_ref": "fashion_mnist", "framework": "pytorch",
        "submission": submission, "submission_path": f"submissions/{submission}", "study": study, "trial": trial,
        "ruleset": "external", "rng_seed": 100 * study + trial, "hparams": {"lr": 0.001 * (trial + 1)},
        "budget_sec": 120.0, "max_global_steps": None, "data_dir": "/data/fashion_mnist", "data_hash": "abc123",
        "hardware": {"cpu": "Xeon", "cpu_count": 2, "memory_gib": 8, "machine": "x86_64", "accelerator": None,
                     "num_devices": 1, "fingerprint": "f00d"},
        "software": {"python": "3.11"}, "git_commit": None, "flags": {},
        "target_metric_name": "error_rate", "metric_direction": "min", "validation_target_value": 0.0722,
        "test_target_value": 0.0797, "max_allowed_runtime_sec": 160.0, "eval_period_time_sec": 10.0,
        "step_hint": 1800, "num_validation_examples": 10000, "num_test_examples": 10000,
        "budget_scale": 1.25, "budget_scale_source": "profile", "eval_period_sec": 12.5,
        "machine_profile": {"id": "0123456789ab", "created": "2026-11-30T18:00:00+00:00", "hardware_fingerprint": "f00d",
                            "software": {"python": "3.11"}, "seconds_per_step": 0.0775,
                            "reference_seconds_per_step": 0.062},
    }


def mini_rows(first_hit, diverge=False):
    """Evaluations every 7.3 s; validation/error_rate meets 0.0722 from evaluation `first_hit` on
    (never if None); `diverge`: NaN from the second evaluation on."""
    rows = []
    for i in range(8):
        error = 0.0701 if first_hit is not None and i >= first_hit else 0.2 - 0.01 * i
        rows.append({"global_step": 37 * (i + 1), "accumulated_submission_time": 7.3 * (i + 1),
                     "accumulated_eval_time": 0.9 * (i + 1), "accumulated_logging_time": 0.01 * (i + 1),
                     "total_duration": 8.4 * (i + 1), "preemption_count": 0, "train/loss": 1.0 / (i + 1),
                     "validation/error_rate": math.nan if diverge and i else error,
                     "validation/loss": 0.5, "test/error_rate": error})
    return rows


def write_mini_suite(root):
    """Three submissions x three studies x two trials of fashion_mnist, in TimeTrial's layout."""
    hits = {"fast": [(2, 4), (3, 2), (2, None)], "slow": [(5, 6), (None, 7), (6, None)],
            "broken": [(None, None)] * 3}
    for submission, studies in hits.items():
        for study, trials in enumerate(studies):
            for trial, first_hit in enumerate(trials):
                d = root / "exp" / "fashion_mnist_pytorch" / submission / f"study_{study}" / f"trial_{trial}"
                record = TrialRecord(d)
                record.write_meta(mini_meta(submission, study, trial))
                record.write_hparams({"lr": 0.001 * (trial + 1)})
                for row in mini_rows(first_hit, diverge=submission == "broken" and trial == 1):
                    record.add_eval(row)
                contended = submission == "fast" and study == 1 and trial == 1  # its study counts it
                reached = first_hit is not None and submission != "broken"
                record.write_summary({"status": "reached" if reached else "budget", "contended": contended,
                                      "time_to_target": 7.3 * (first_hit + 1) if reached else None,
                                      "contention": {"other_cores_mean": 1.2 if contended else 0.0}})


@pytest.mark.parametrize(
    "flags",
    [[], ["--mode", "algoperf", "--algoperf_version", "0.6", "--suite", "fashion_mnist"]],
    ids=["exact", "algoperf-suite"],
)
def test_exported_mini_suite_scores_as_the_original_records(tmp_path, capsys, flags):
    """The round trip: TimeTrial records of a mini workload (no AlgoPerf target) and their AlgoPerf
    export score alike, per study (time, steps, the trial that counts) and per entry (scores,
    intervals, speedups, which use the budget)."""
    write_mini_suite(tmp_path)
    assert export(tmp_path) == 0
    tables = {}
    for name, runs in (("original", tmp_path / "exp"), ("export", tmp_path / "logs")):
        out = tmp_path / f"report_{name}"
        assert report_main([str(runs), "--out", str(out), "--bootstrap", "20", *flags]) == 0, capsys.readouterr().err
        tables[name] = {csv: pd.read_csv(out / csv) for csv in ("studies.csv", "times.csv", "scores.csv")}
    studies = tables["original"]["studies.csv"]
    assert len(studies) == 9 and studies["reached"].sum() == 6  # the records are not trivial
    assert studies.loc[studies["entry"] == "fast", "time"].tolist() == pytest.approx([21.9, 21.9, 21.9])
    assert studies["contended_trials"].sum() == 1 and studies["time_contended"].sum() == 1
    report = (tmp_path / "report_export" / "leaderboard.md").read_text()
    assert "0123456789ab" in report  # the machine profile travels with the export
    for csv_name, original in tables["original"].items():
        pd.testing.assert_frame_equal(tables["export"][csv_name], original, check_exact=True, obj=csv_name)



def test_algoperf_suite_without_mini_workloads_says_to_name_them(tmp_path, capsys):
    """AlgoPerf mode's default suite is AlgoPerf's workloads; on mini-suite records (original or
    exported) none of them was run, so the report says which workloads were, instead of scoring
    every entry 0."""
    write_mini_suite(tmp_path)
    assert export(tmp_path) == 0
    for runs in (tmp_path / "exp", tmp_path / "logs"):
        code = report_main([str(runs), "--out", str(tmp_path / "r"), "--mode", "algoperf", "--algoperf_version", "0.6"])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1
        assert "no entry ran any workload of the suite (criteo1tb, fastmri," in err
        assert "the runs are of fashion_mnist: choose the suite among those (--suite)" in err