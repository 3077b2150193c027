"""Export TimeTrial run records to AlgoPerf's log layout, for AlgoPerf's own scoring code.

    python -m harness.export_algoperf experiments/default --out algoperf_logs

reads    <root>/<workload>_<framework>/<submission>/study_<k>/trial_<i>/eval.jsonl
writes   <out>/<submission>/study_<k>/<workload>_<framework>/trial_<i>/eval_measurements.csv
Existing files under --out are never replaced: the export stops with an error naming them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserInputError
from harness.records import export_eval_measurements


def export_tree(root: Path, out: Path) -> list[Path]:
    """Export every trial under `root`; returns the CSV paths written."""
    sources = sorted(root.glob("*/*/study_*/trial_*/eval.jsonl"))
    if not sources:
        raise UserInputError(f"no run records (*/*/study_*/trial_*/eval.jsonl) under {root}")
    targets = []
    for source in sources:
        trial, study, submission, workload = source.parent, source.parent.parent, *source.parents[2:4]
        targets.append(out / submission.name / study.name / workload.name / trial.name / "eval_measurements.csv")
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise UserInputError(f"refusing to replace existing files: {', '.join(existing)}")
    for source, target in zip(sources, targets):
        export_eval_measurements(source.parent, target)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="<experiment_dir>/<experiment_name>")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        written = export_tree(args.root, args.out)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} eval_measurements.csv files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
