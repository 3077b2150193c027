"""Run timed trials of a submission on a workload and record them.

    python submit.py                                   # NAdamW on fashion_mnist, one trial
    python submit.py --workload kjv_lm --submission adamw --num_tuning_trials 3
    python submit.py --submission path/to/my_algo.py --tuning_ruleset self

Every bad flag value ends with one `error:` line and exit status 2, before anything is written.
Exit status 1 means a trial failed (its error is in its summary.json); 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

from harness import search_space
from harness.discovery import load_submission, load_workload
from harness.errors import UserInputError
from harness.experiment import Experiment, describe, plan, run_planned

FLAGS = flags.FLAGS
flags.DEFINE_string("workload", "fashion_mnist", "Workload name (a folder under workloads/).")
flags.DEFINE_string("submission", "nadamw", "Submission name (a folder under submissions/) or path to its .py file.")
flags.DEFINE_enum("framework", "pytorch", ["pytorch", "jax"], "Framework of the workload and submission.")
flags.DEFINE_enum("tuning_ruleset", "external", ["external", "self"], "AlgoPerf tuning ruleset.")
flags.DEFINE_string("tuning_search_space", None,
                    "Search-space JSON (AlgoPerf format); default: the submission's search_space.json.")
flags.DEFINE_integer("num_tuning_trials", 1, "Trials to draw from the search space (external ruleset).", lower_bound=1)
flags.DEFINE_string("experiment_dir", "experiments", "Root directory of run records.")
flags.DEFINE_string("experiment_name", "default", "Experiment name: a directory under --experiment_dir.")
flags.DEFINE_string("data_dir", str(Path.home() / ".cache" / "timetrial" / "data"),
                    "Where datasets are looked for (and downloaded to, when allowed).")
flags.DEFINE_integer("rng_seed", 0, "Base seed; each trial's seed is derived from it, the study and the trial index.")
flags.DEFINE_integer("max_global_steps", None, "Stop each trial after this many steps.", lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Delete existing records of the trials to run instead of refusing.")


def _points(submission) -> list[dict | None]:
    if FLAGS.tuning_ruleset == "self":
        if FLAGS.tuning_search_space:
            raise UserInputError("--tuning_search_space is for the external ruleset; self-tuning has no hyperparameters")
        return [None]
    path = FLAGS.tuning_search_space or submission.search_space_path
    if path is None:
        raise UserInputError(
            f"submission {submission.name} has no search_space.json; pass --tuning_search_space "
            "or use --tuning_ruleset self"
        )
    return search_space.draw(search_space.load(path), FLAGS.num_tuning_trials, seed=FLAGS.rng_seed)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.framework != "pytorch":
        raise UserInputError(f"--framework {FLAGS.framework} is not available yet; use pytorch")
    workload = load_workload(FLAGS.workload, FLAGS.framework, FLAGS.data_dir)
    submission = load_submission(FLAGS.submission, FLAGS.framework)
    experiment = Experiment(
        workload=workload, framework=FLAGS.framework, submission=submission, ruleset=FLAGS.tuning_ruleset,
        points=_points(submission), root=Path(FLAGS.experiment_dir) / FLAGS.experiment_name,
        rng_seed=FLAGS.rng_seed, max_global_steps=FLAGS.max_global_steps,
        flags={f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])},
    )
    trials = plan(experiment, FLAGS.overwrite)
    workload.data_hash()  # loads the dataset: a missing one fails here, before any record is touched
    lines, failed = [], False
    for trial in trials:
        if trial.skip:
            summary = json.loads((trial.dir / "summary.json").read_text())
            lines.append(describe(experiment, trial, summary) + " (recorded earlier; skipped)")
            continue
        outcome = run_planned(experiment, trial)
        failed = failed or outcome.status == "failed"
        lines.append(describe(experiment, trial, outcome.summary()))
    print(f"run records: {experiment.root}")
    print("\n".join(lines))
    return 1 if failed else 0


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag is one `error:` line and exit status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as exc:
        _fail(str(exc))


def run(argv: list[str]) -> None:
    try:
        sys.exit(main(argv))
    except UserInputError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    app.run(run, flags_parser=parse_flags)
