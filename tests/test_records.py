"""Run-record files: atomic writes and the AlgoPerf export."""

from __future__ import annotations

import csv
import json

import pytest

from harness.export_algoperf import main as export_main
from harness.records import TrialRecord, atomic_write_text

ROWS = [
    {"global_step": 1, "accumulated_submission_time": 0.5, "accumulated_eval_time": 1.0,
     "accumulated_logging_time": 0.01, "total_duration": 1.6, "preemption_count": 0,
     "validation/error_rate": 0.9, "test/error_rate": 0.91, "train/loss": 2.3},
    {"global_step": 40, "accumulated_submission_time": 10.25, "accumulated_eval_time": 2.0,
     "accumulated_logging_time": 0.02, "total_duration": 12.4, "preemption_count": 0,
     "validation/error_rate": 0.2, "test/error_rate": 0.21, "train/loss": 0.5},
]


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_export_writes_algoperf_layout_with_score_equal_to_submission_time(tmp_path, capsys):
    record = TrialRecord(tmp_path / "exp" / "toy_pytorch" / "algo" / "study_0" / "trial_1")
    for row in ROWS:
        record.add_eval(row)
    assert export_main([str(tmp_path / "exp"), "--out", str(tmp_path / "logs")]) == 0
    csv_path = tmp_path / "logs" / "algo" / "study_0" / "toy_pytorch" / "trial_1" / "eval_measurements.csv"
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])  # sorted by name, as AlgoPerf's logger writes it (tests/test_export_algoperf.py)
    assert header == sorted(header) and header[:6] == ["accumulated_eval_time", "accumulated_logging_time",
                                                       "accumulated_submission_time", "global_step",
                                                       "preemption_count", "score"]
    assert [float(r["score"]) for r in rows] == [0.5, 10.25]
    assert [float(r["validation/error_rate"]) for r in rows] == [0.9, 0.2]
    # A second export refuses to replace what the first wrote.
    assert export_main([str(tmp_path / "exp"), "--out", str(tmp_path / "logs")]) == 2
    assert "refusing to replace existing files" in capsys.readouterr().err


def test_eval_rows_are_complete_json_lines_after_each_evaluation(tmp_path):
    record = TrialRecord(tmp_path)
    record.add_eval(ROWS[0])
    assert [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()] == ROWS[:1]
    record.add_eval(ROWS[1])
    assert [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()] == ROWS
