"""Export TimeTrial run records to AlgoPerf's log layout, for AlgoPerf's own scoring code.

    python -m harness.export_algoperf experiments/default --out algoperf_logs

reads    <root>/<workload>_<framework>/<submission>/study_<k>/trial_<i>/eval.jsonl (+ meta.json)
writes   <out>/<submission>/study_<k>/<workload>_<framework>/trial_<i>/eval_measurements.csv

Each CSV has the columns AlgoPerf's logger writes, sorted by name as it sorts them: the
accumulated times, global_step, preemption_count, score (= accumulated_submission_time),
total_duration, every train/, validation/ and test/ metric the trial measured, and
`validation/num_examples` and `test/num_examples` from meta.json's `num_validation_examples`
and `num_test_examples` (the workload's evaluation sizes). Records whose meta.json lacks those
keys (written before TimeTrial recorded them) are exported without those columns, with one
warning; nothing is filled in that the trial did not record. Metrics AlgoPerf measures and
TimeTrial does not (e.g. `train/bleu`: TimeTrial's bible_translation decodes only validation
and test) are absent too.

Beside each CSV the export writes `timetrial_target.json`: the facts scoring needs that AlgoPerf's
files do not carry (TARGET_KEYS, copied from meta.json: the target metric, its direction, the
validation and test targets, the budget, its scale and machine profile, the Docker image; SUMMARY_KEYS, from
summary.json: the contention flag), so `python -m scoring.report` scores the exported runs
of workloads AlgoPerf's targets table does not know (the mini suite) as it scores the originals.
Records whose meta.json lacks a target are exported without that file, with one warning.

Existing files under --out are never replaced: the export stops with an error naming them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserInputError
from harness.records import atomic_write_text, eval_measurements_csv, read_json, write_json

# AlgoPerf's column -> the meta.json key (named like AlgoPerf's Workload attribute) it comes from
NUM_EXAMPLES_KEYS = {"validation/num_examples": "num_validation_examples", "test/num_examples": "num_test_examples"}
# The trial's target, beside its eval_measurements.csv: meta.json's keys, copied when present
TARGET_FILE = "timetrial_target.json"
TARGET_KEYS = (
    "workload",
    "target_metric_name",
    "metric_direction",
    "validation_target_value",
    "test_target_value",
    "max_allowed_runtime_sec",
    "budget_sec",
    "step_hint",
    "budget_scale",  # how the budget was scaled for the machine, and by which profile: scoring compares by them
    "budget_scale_source",
    "machine_profile",
    "docker_image_id",  # the image a trial's container ran (scoring does not mix images)
    "docker",
)
SUMMARY_KEYS = ("contended", "contention")  # summary.json's flag for other processes' CPU use, copied too
REQUIRED_TARGET_KEYS = ("target_metric_name", "metric_direction", "validation_target_value")


@dataclass
class Export:
    """What an export wrote, and the trials whose meta.json had no evaluation sizes."""

    written: list[Path] = field(default_factory=list)
    without_num_examples: list[Path] = field(default_factory=list)
    without_target: list[Path] = field(default_factory=list)


def _read_json_file(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read JSON ({exc})") from None


def read_meta(meta_path: Path) -> dict:
    """The trial's meta.json as a dict ({} when there is none); anything else is an error."""
    meta = _read_json_file(meta_path) if meta_path.exists() else {}
    if not isinstance(meta, dict):
        raise UserInputError(f"{meta_path}: must be a JSON object")
    return meta


def num_examples(meta: dict, meta_path: Path) -> dict[str, int]:
    """{'validation/num_examples': n, 'test/num_examples': m} from the trial's meta.json; a key it
    lacks is left out. A value that is not a positive integer is an error naming the file."""
    found = {}
    for column, key in NUM_EXAMPLES_KEYS.items():
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{meta_path}: {key} must be a positive integer, got {value!r}")
        found[column] = value
    return found


def recorded_target(meta: dict, summary: dict | None = None) -> dict | None:
    """The TARGET_KEYS meta.json has and the SUMMARY_KEYS summary.json has, for TARGET_FILE; None
    when it has no target (any of REQUIRED_TARGET_KEYS missing or null). Values are copied as
    recorded: scoring checks them."""
    if any(meta.get(key) is None for key in REQUIRED_TARGET_KEYS):
        return None
    summary = summary if isinstance(summary, dict) else {}
    return {key: meta[key] for key in TARGET_KEYS if key in meta} | {k: summary[k] for k in SUMMARY_KEYS if k in summary}


def read_eval_rows(path: Path) -> list[dict]:
    """The evaluation rows of an eval.jsonl; a malformed line, or one without global_step and
    accumulated_submission_time, is an error naming the file and line."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path}: malformed JSON on line {number} ({exc})") from None
        if not isinstance(row, dict) or not {"global_step", "accumulated_submission_time"} <= set(row):
            raise UserInputError(f"{path}: line {number} is not an evaluation row with global_step and "
                                 "accumulated_submission_time")
        rows.append(row)
    return rows


def algoperf_path(eval_jsonl: Path, out: Path) -> Path:
    """Where AlgoPerf's layout puts the CSV of the trial that wrote `eval_jsonl`."""
    trial, study, submission, workload = eval_jsonl.parents[:4]
    return out / submission.name / study.name / workload.name / trial.name / "eval_measurements.csv"


def export_tree(root: Path, out: Path) -> Export:
    """Export every trial under `root` (see the module docstring)."""
    sources = sorted(root.glob("*/*/study_*/trial_*/eval.jsonl"))
    if not sources:
        raise UserInputError(f"no run records (*/*/study_*/trial_*/eval.jsonl) under {root}")
    csv_paths = [algoperf_path(source, out) for source in sources]
    existing = [str(p) for c in csv_paths for p in (c, c.with_name(TARGET_FILE)) if p.exists()]
    if existing:
        raise UserInputError(f"refusing to replace existing files: {', '.join(existing)}")
    texts, trial_targets, result = [], [], Export()
    for source in sources:  # read and check everything before writing anything
        meta_path = source.parent / "meta.json"
        meta = read_meta(meta_path)
        sizes = num_examples(meta, meta_path)
        if len(sizes) < len(NUM_EXAMPLES_KEYS):
            result.without_num_examples.append(meta_path)
        trial_targets.append(recorded_target(meta, read_json(source.parent / "summary.json")))
        if trial_targets[-1] is None:
            result.without_target.append(meta_path)
        texts.append(eval_measurements_csv(read_eval_rows(source), sizes))
    for csv_path, text, target in zip(csv_paths, texts, trial_targets):
        atomic_write_text(csv_path, text)
        result.written.append(csv_path)
        if target is not None:
            write_json(csv_path.with_name(TARGET_FILE), target)
    return result


def _warning(paths: list[Path], lack: str, consequence: str) -> str:
    """One warning line for the trials whose meta.json lacks something, with an example."""
    n = len(paths)
    whose = f"{n} trials' meta.json lack" if n > 1 else "1 trial's meta.json lacks"
    return f"warning: {whose} {lack}; {consequence}, e.g. {paths[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="<experiment_dir>/<experiment_name>")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = export_tree(args.root, args.out)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(result.written)} eval_measurements.csv files under {args.out}")
    if result.without_num_examples:
        many = len(result.without_num_examples) > 1
        lack = " or ".join(NUM_EXAMPLES_KEYS.values())
        consequence = f"{'their CSVs have' if many else 'its CSV has'} no such num_examples column"
        print(_warning(result.without_num_examples, lack, consequence), file=sys.stderr)
    if result.without_target:
        many = len(result.without_target) > 1
        lack = f"a target ({', '.join(REQUIRED_TARGET_KEYS)})"
        consequence = f"no {TARGET_FILE} beside {'their CSVs' if many else 'its CSV'}"
        print(_warning(result.without_target, lack, consequence), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
