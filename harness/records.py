"""Run records: one directory per trial, every file written atomically (temp file, then rename).

    meta.json      hardware fingerprint, software versions, git commit, seed, flags, ruleset, targets
    hparams.json   the hyperparameter point (absent for self-tuning)
    eval.jsonl     one JSON object per evaluation (rewritten whole after each evaluation)
    train.jsonl    {"global_step", "loss"} every `log_every` steps
    metrics.jsonl  {"global_step", ...} rows a submission logged through `workload.metrics_logger`
    summary.json   status (running|reached|budget|diverged|failed|stopped), time_to_target, ...

`eval_measurements_csv` turns `eval.jsonl` rows into AlgoPerf's `eval_measurements.csv` text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

# The columns every row of AlgoPerf's eval_measurements.csv has besides the train/, validation/ and
# test/ metrics. AlgoPerf's logger (algoperf/logger_utils.py, write_to_csv) sorts the whole header
# by name, so these do not all lead: "total_duration" sorts between test/* and train/*.
ALGOPERF_FIXED_COLUMNS = (
    "accumulated_eval_time",
    "accumulated_logging_time",
    "accumulated_submission_time",
    "global_step",
    "preemption_count",
    "score",
    "total_duration",
)


STEP_LOGS = ("train.jsonl", "metrics.jsonl")  # rows keyed by global_step, cut back to the checkpoint on resume


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


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, _json(obj))


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def read_json(path: Path) -> dict:
    """A JSON object from a file; {} when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class TrialRecord:
    """The files of one trial directory; `add_eval` leaves the directory complete each time.

    With `writes=False` the record keeps its rows in memory and writes nothing (a multi-device
    trial's processes other than rank 0, which alone writes the files)."""

    def __init__(self, trial_dir: Path, writes: bool = True) -> None:
        self.dir = Path(trial_dir)
        self.writes = writes
        self.eval_rows: list[dict] = []
        self.step_logs: dict[str, list[dict]] = {name: [] for name in STEP_LOGS}

    def _write(self, name: str, text: str) -> None:
        if self.writes:
            atomic_write_text(self.dir / name, text)

    def write_meta(self, meta: dict) -> None:
        self._write("meta.json", _json(meta))

    def write_hparams(self, point: dict | None) -> None:
        if point is not None:
            self._write("hparams.json", _json(point))

    def write_summary(self, summary: dict) -> None:
        self._write("summary.json", _json(summary))

    def resume(self, checkpoint_row: dict) -> None:
        """Reload the rows of an interrupted run up to its checkpoint; the checkpoint's own
        evaluation row is appended if the run died before writing it."""
        step = checkpoint_row["global_step"]
        self.eval_rows = [r for r in read_jsonl_prefix(self.dir / "eval.jsonl") if r["global_step"] <= step]
        if not self.eval_rows or self.eval_rows[-1]["global_step"] != step:
            self.eval_rows.append(checkpoint_row)
        self._write("eval.jsonl", _jsonl(self.eval_rows))
        for name in STEP_LOGS:
            if (self.dir / name).exists():
                self.step_logs[name] = [r for r in read_jsonl_prefix(self.dir / name) if r["global_step"] <= step]
                self._write(name, _jsonl(self.step_logs[name]))

    def set_aside(self, suffix: str) -> None:
        """Rename the rows written so far (`eval.jsonl` -> `eval.jsonl<suffix>`, and the step logs) so
        that a restarted run writes fresh files and nothing written before is lost."""
        for name in ("eval.jsonl", *STEP_LOGS):
            if self.writes and (self.dir / name).exists():
                os.replace(self.dir / name, self.dir / f"{name}{suffix}")
        self.eval_rows, self.step_logs = [], {name: [] for name in STEP_LOGS}

    def add_eval(self, row: dict) -> None:
        self.eval_rows.append(row)
        self._write("eval.jsonl", _jsonl(self.eval_rows))

    def add_train(self, rows: list[dict]) -> None:
        self._add_step_rows("train.jsonl", rows)

    def add_metrics(self, rows: list[dict]) -> None:
        self._add_step_rows("metrics.jsonl", rows)

    def _add_step_rows(self, name: str, rows: list[dict]) -> None:
        if rows:
            self.step_logs[name].extend(rows)
            self._write(name, _jsonl(self.step_logs[name]))


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


def eval_measurements_csv(rows: list[dict], num_examples: dict[str, int] | None = None) -> str:
    """AlgoPerf's eval_measurements.csv text: the fixed columns and the metrics measured (keys
    with a '/'), with the header sorted by name as AlgoPerf's logger writes it.

    `num_examples` ({"validation/num_examples": n, "test/num_examples": m}) is added to every row,
    as AlgoPerf's `Workload.eval_model` does; no other column is made up.
    """
    extra = dict(num_examples or {})
    bad = [k for k, v in extra.items() if "/" not in k or isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"num_examples must map 'split/num_examples' to positive integers, got {extra!r}")
    metrics = {k for row in rows for k in row if "/" in k} | set(extra)
    columns = sorted({*ALGOPERF_FIXED_COLUMNS, *metrics})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = {**row, "score": row["accumulated_submission_time"], **extra}
        writer.writerow([values.get(column, "") for column in columns])
    return out.getvalue()
