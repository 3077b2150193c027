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

Existing files under --out are never replaced: the export stops with an error naming them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserInputError
from harness.records import atomic_write_text, eval_measurements_csv

# AlgoPerf's column -> the meta.json key (named like AlgoPerf's Workload attribute) it comes from
NUM_EXAMPLES_KEYS = {"validation/num_examples": "num_validation_examples", "test/num_examples": "num_test_examples"}


@dataclass
class Export:
    """What an export wrote, and the trials whose meta.json had no evaluation sizes."""

    written: list[Path] = field(default_factory=list)
    without_num_examples: list[Path] = field(default_factory=list)


def _read_json_file(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read JSON ({exc})") from None


def num_examples(meta_path: Path) -> dict[str, int]:
    """{'validation/num_examples': n, 'test/num_examples': m} from the trial's meta.json; a key it
    lacks is left out. A value that is not a positive integer is an error naming the file."""
    meta = _read_json_file(meta_path) if meta_path.exists() else {}
    if not isinstance(meta, dict):
        raise UserInputError(f"{meta_path}: must be a JSON object")
    found = {}
    for column, key in NUM_EXAMPLES_KEYS.items():
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{meta_path}: {key} must be a positive integer, got {value!r}")
        found[column] = value
    return found


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
    targets = [algoperf_path(source, out) for source in sources]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise UserInputError(f"refusing to replace existing files: {', '.join(existing)}")
    texts, result = [], Export()
    for source in sources:  # read and check everything before writing anything
        sizes = num_examples(source.parent / "meta.json")
        if len(sizes) < len(NUM_EXAMPLES_KEYS):
            result.without_num_examples.append(source.parent / "meta.json")
        texts.append(eval_measurements_csv(read_eval_rows(source), sizes))
    for target, text in zip(targets, texts):
        atomic_write_text(target, text)
        result.written.append(target)
    return result


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
        n, keys = len(result.without_num_examples), " or ".join(NUM_EXAMPLES_KEYS.values())
        whose = f"{n} trials' meta.json lack" if n > 1 else "1 trial's meta.json lacks"
        print(
            f"warning: {whose} {keys}; {'their CSVs have' if n > 1 else 'its CSV has'} no such "
            f"num_examples column, e.g. {result.without_num_examples[0]}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
