"""Run records: one directory per trial, every file written atomically (temp file, then rename).

    meta.json      hardware fingerprint, software versions, git commit, seed, flags, ruleset, targets
    hparams.json   the hyperparameter point (absent for self-tuning)
    eval.jsonl     one JSON object per evaluation (rewritten whole after each evaluation)
    train.jsonl    {"global_step", "loss"} every `log_every` steps
    summary.json   status (running|reached|budget|diverged|failed|stopped), time_to_target, ...

`export_eval_measurements` writes AlgoPerf's `eval_measurements.csv` from `eval.jsonl`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

ALGOPERF_LEADING_COLUMNS = (
    "accumulated_eval_time",
    "accumulated_logging_time",
    "accumulated_submission_time",
    "global_step",
    "preemption_count",
    "score",
    "total_duration",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def read_json(path: Path) -> dict:
    """A JSON object from a file; {} when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class TrialRecord:
    """The files of one trial directory; `add_eval` leaves the directory complete each time."""

    def __init__(self, trial_dir: Path) -> None:
        self.dir = Path(trial_dir)
        self.eval_rows: list[dict] = []
        self.train_rows: list[dict] = []

    def write_meta(self, meta: dict) -> None:
        write_json(self.dir / "meta.json", meta)

    def write_hparams(self, point: dict | None) -> None:
        if point is not None:
            write_json(self.dir / "hparams.json", point)

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def resume(self, checkpoint_row: dict) -> None:
        """Reload the rows of an interrupted run up to its checkpoint; the checkpoint's own
        evaluation row is appended if the run died before writing it."""
        step = checkpoint_row["global_step"]
        self.eval_rows = [r for r in read_jsonl_prefix(self.dir / "eval.jsonl") if r["global_step"] <= step]
        if not self.eval_rows or self.eval_rows[-1]["global_step"] != step:
            self.eval_rows.append(checkpoint_row)
        self.train_rows = [r for r in read_jsonl_prefix(self.dir / "train.jsonl") if r["global_step"] <= step]
        atomic_write_text(self.dir / "eval.jsonl", _jsonl(self.eval_rows))
        atomic_write_text(self.dir / "train.jsonl", _jsonl(self.train_rows))

    def add_eval(self, row: dict) -> None:
        self.eval_rows.append(row)
        atomic_write_text(self.dir / "eval.jsonl", _jsonl(self.eval_rows))

    def add_train(self, rows: list[dict]) -> None:
        if rows:
            self.train_rows.extend(rows)
            atomic_write_text(self.dir / "train.jsonl", _jsonl(self.train_rows))


def read_jsonl_prefix(path: Path) -> list[dict]:
    """The complete JSON lines of a file (a torn last line, from a killed writer, is dropped)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def eval_measurements_csv(rows: list[dict]) -> str:
    """AlgoPerf's eval_measurements.csv text: its fixed columns, then the metrics sorted by name."""
    metrics = sorted({k for row in rows for k in row if "/" in k})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*ALGOPERF_LEADING_COLUMNS, *metrics])
    for row in rows:
        values = {**row, "score": row["accumulated_submission_time"]}
        writer.writerow([values.get(column, "") for column in (*ALGOPERF_LEADING_COLUMNS, *metrics)])
    return out.getvalue()


def export_eval_measurements(trial_dir: Path, csv_path: Path) -> None:
    """Write the trial's evaluations as AlgoPerf's eval_measurements.csv at `csv_path`."""
    atomic_write_text(csv_path, eval_measurements_csv(read_jsonl(Path(trial_dir) / "eval.jsonl")))
