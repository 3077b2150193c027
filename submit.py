"""Run timed trials of submissions on workloads and record them: one trial, a tuning run, or a sweep.

    python submit.py                                              # NAdamW on fashion_mnist, one trial
    python submit.py --workload kjv_lm --submission adamw --num_tuning_trials 5 --num_studies 3
    python submit.py --suite mini --submission nadamw,adamw --max_workers 2
    python submit.py --submission path/to/my_algo.py --tuning_ruleset self --executor ray
    python submit.py --docker --docker_cpus 2 --trial_memory_gb 8    # each trial in a container (docker/)

Each trial runs in its own worker process (`harness/worker.py`) under a wall-clock and an optional
memory limit. Rerunning a command skips finished trials and resumes interrupted ones.
Every bad flag value ends with one `error:` line and exit status 2, before anything is written.
Exit status 1 means a trial failed, was interrupted, or is run by another process (locked); 0 otherwise.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

from absl import app, flags

from harness import calibrate, containers, machine_profile, search_space, slurm
from harness.discovery import REPO_ROOT, SubmissionFile, available_workloads, find_submission, load_workload
from harness.errors import UserInputError
from harness.executors import Limits, run_local, run_ray
from harness.experiment import Experiment, PlannedTrial, describe, plan, prepare
from harness.progress import SweepProgress
from harness.records import read_json
from harness.trial_lock import Locked
from harness.worker import run_trial_dir

FLAGS = flags.FLAGS
flags.DEFINE_list("workload", ["fashion_mnist"], "Workloads: names (folders under workloads/) or paths, comma-separated.")
flags.DEFINE_enum("suite", None, ["mini"], "Run every workload of a suite (instead of --workload).")
flags.DEFINE_list("submission", ["nadamw"],
                  "Submissions: names (folders under submissions/) or paths to .py files, comma-separated.")
flags.DEFINE_enum("framework", "pytorch", ["pytorch", "jax"], "Framework of the workload and submission.")
flags.DEFINE_enum("tuning_ruleset", "external", ["external", "self"], "AlgoPerf tuning ruleset.")
flags.DEFINE_string("tuning_search_space", None,
                    "Search-space JSON (AlgoPerf format); default: each submission's search_space.json.")
flags.DEFINE_integer("num_tuning_trials", 1, "Trials per study (external ruleset).", lower_bound=1)
flags.DEFINE_integer("num_studies", 1, "Studies, each with its own seeds and hyperparameter draws.", lower_bound=1)
flags.DEFINE_string("experiment_dir", "experiments", "Root directory of run records.")
flags.DEFINE_string("experiment_name", "default", "Experiment name: a directory under --experiment_dir.")
flags.DEFINE_string("data_dir", str(Path.home() / ".cache" / "timetrial" / "data"),
                    "Where datasets are looked for (and downloaded to, when allowed).")
flags.DEFINE_integer("rng_seed", 0, "Base seed; trial seeds and draws derive from it, the study and the trial.",
                     lower_bound=0)
flags.DEFINE_integer("max_global_steps", None, "Stop each trial after this many steps.", lower_bound=1)
flags.DEFINE_integer("eval_every_steps", None,
                     "Evaluate after step 1 and every N steps instead of every eval_period_time_sec of wall time, "
                     "so that the same seed gives identical evaluation rows (times aside) on a CPU.", lower_bound=1)
flags.DEFINE_integer("num_devices", 1, "Devices each trial trains on; the batch size stays global (AlgoPerf's rule). "
                     "PyTorch: one process per device under torchrun (GPUs, or CPU processes); JAX: a device mesh.",
                     lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Delete existing records of the trials to run instead of refusing.")
flags.DEFINE_boolean("rerun_failed", False, "Rerun trials recorded as failed (their old records are removed).")
flags.DEFINE_enum("executor", "local", ["local", "ray", "slurm", "inline"],
                  "local: worker processes on this machine; ray: Ray tasks; slurm: one Slurm job per trial, submitted "
                  "with submitit from a login node (harness/slurm.py); inline: in this process (debugging).")
flags.DEFINE_integer("max_workers", 1, "Trials run at once (local and local Ray). More than one perturbs "
                     "each other's timings on a shared CPU.", lower_bound=1)
flags.DEFINE_string("ray_address", None, "Address of an existing Ray cluster; default: start a local one.")
flags.DEFINE_string("slurm_partition", None, "With --executor slurm: the partition of the trials' jobs.")
flags.DEFINE_integer("slurm_gpus_per_trial", None, "With --executor slurm: GPUs each trial's job asks for "
                     "(--gpus-per-node), 0 for none; default --num_devices.", lower_bound=0)
flags.DEFINE_integer("slurm_cpus_per_trial", None, "With --executor slurm: CPUs each trial's job asks for "
                     "(--cpus-per-task); default: the cluster's.", lower_bound=1)
flags.DEFINE_list("slurm_parameters", [],
                  "With --executor slurm: more sbatch options for each trial's job, name=value or a bare switch, "
                  "comma-separated, values without commas (e.g. account=my_lab,qos=high,exclusive). A job's time "
                  "limit is the per-trial wall-clock limit (--trial_timeout_sec) + 10 min; its memory, "
                  "--trial_memory_gb + 1 GB.")
flags.DEFINE_float("trial_timeout_sec", None,
                   "Per-trial wall-clock limit; default 3 x the trial's budget + 300 s.", lower_bound=1)
flags.DEFINE_float("trial_memory_gb", None, "Per-trial resident-memory limit (worker and children).", lower_bound=0.1)
flags.DEFINE_float("budget_scale", None,
                   "Multiply every workload's budget and evaluation period by this instead of this machine's calibrated "
                   "scale (harness/machine_profile.py); no calibration is run.", lower_bound=0.001)
flags.DEFINE_boolean("docker", False,
                     "Run each trial's worker in a Docker container of its own, made from --docker_image (docker/): "
                     "the image's code, the data mounted read-only, no network.")
flags.DEFINE_string("docker_image", "timetrial:cpu", "The image of --docker (bash docker/build_image.sh builds it).")
flags.DEFINE_integer("docker_cpus", None, "With --docker: CPUs of each trial's container (trials running at once get "
                     "disjoint CPU sets); default: every CPU.", lower_bound=1)
flags.DEFINE_string("docker_gpus", None, "With --docker: GPUs for each trial's container, 'all' or a count "
                    "(needs the NVIDIA Container Toolkit on the engine).")
flags.register_validator("docker_gpus", lambda v: v is None or v == "all" or (v.isdigit() and int(v) > 0),
                         message="--docker_gpus must be 'all' or a positive count")
for _name in ("trial_timeout_sec", "trial_memory_gb", "budget_scale"):
    flags.register_validator(_name, lambda value: value is None or math.isfinite(value),
                             message=f"--{_name} must be a finite number")


def _space(submission) -> list | dict | None:
    if FLAGS.tuning_ruleset == "self":
        if FLAGS.tuning_search_space:
            raise UserInputError("--tuning_search_space is for the external ruleset; self-tuning has no hyperparameters")
        return None
    path = FLAGS.tuning_search_space or submission.search_space_path
    if path is None:
        raise UserInputError(
            f"submission {submission.name} has no search_space.json; pass --tuning_search_space "
            "or use --tuning_ruleset self"
        )
    return search_space.load(path)


def _check_writable(root: Path) -> None:
    """The run records' root exists (made now if need be) as a directory this process can write."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserInputError(f"cannot write run records under {root}: {exc.strerror or exc} "
                             "(check --experiment_dir and --experiment_name)") from None


def _refuse_shared_names(submissions: list[SubmissionFile]) -> None:
    """Two submissions named alike would share run records: refuse before anything is written."""
    paths_by_name: dict[str, list[Path]] = {}
    for submission in submissions:
        paths_by_name.setdefault(submission.name, []).append(submission.path)
    shared = {name: paths for name, paths in paths_by_name.items() if len(paths) > 1}
    if shared:
        raise UserInputError(
            "submissions would share run records under one name: "
            + "; ".join(f"{name!r} ({', '.join(map(str, paths))})" for name, paths in shared.items())
            + ". A file is named after itself, or after its folder when it is submission.py or torch.py: "
            "rename a file or folder, or run them as separate experiments (--experiment_name)"
        )


def _code_outside_image(submissions: list[SubmissionFile], workload_refs: list[str]) -> list[Path]:
    """Folders of the submissions and workloads given by a path outside the code an image holds (mounted read-only)."""
    inside = [REPO_ROOT / "submissions", REPO_ROOT / "workloads"]
    folders = [s.path.parent for s in submissions] + [Path(ref).resolve() for ref in workload_refs if "/" in ref]
    return [f for f in folders if not any(f.resolve().is_relative_to(i) for i in inside)]


def _open_container_runtime() -> containers.Runtime | None:
    """With --docker: the engine, the image and the containers' limits (checked before anything is planned)."""
    if not FLAGS.docker:
        given = [f"--{n}" for n in ("docker_image", "docker_cpus", "docker_gpus") if FLAGS[n].present]
        if given:
            raise UserInputError(f"{', '.join(given)} only apply with --docker")
        return None
    if FLAGS.executor != "local":
        raise UserInputError(f"--docker runs trials with the local executor, not --executor {FLAGS.executor}")
    return containers.open_runtime(FLAGS.docker_image, Path(FLAGS.data_dir), FLAGS.docker_cpus,
                                   FLAGS.trial_memory_gb, FLAGS.docker_gpus, FLAGS.max_workers)


def _slurm_request() -> slurm.SlurmRequest | None:
    """With --executor slurm: what each trial's job asks for (checked before anything is planned)."""
    given = [f"--{name}" for name in FLAGS if name.startswith("slurm_") and FLAGS[name].present]
    if FLAGS.executor != "slurm":
        if given:
            raise UserInputError(f"{', '.join(given)} only apply with --executor slurm")
        return None
    if FLAGS["max_workers"].present:
        raise UserInputError("--max_workers does not apply with --executor slurm: Slurm runs the trials' jobs "
                             "as its queue allows")
    slurm.check_cluster(slurm.cluster())
    gpus = FLAGS.num_devices if FLAGS.slurm_gpus_per_trial is None else FLAGS.slurm_gpus_per_trial
    return slurm.SlurmRequest(gpus, FLAGS.slurm_partition, FLAGS.slurm_cpus_per_trial,
                              slurm.parse_parameters(FLAGS.slurm_parameters))


def experiments(runtime: containers.Runtime | None = None) -> list[Experiment]:
    workload_refs = available_workloads(FLAGS.framework, suite=FLAGS.suite) if FLAGS.suite else FLAGS.workload
    if not workload_refs or not FLAGS.submission:
        raise UserInputError("no workload or no submission given")
    submissions = [find_submission(ref, FLAGS.framework) for ref in FLAGS.submission]  # not imported here
    _refuse_shared_names(submissions)
    spaces = [_space(s) for s in submissions]
    key_flags = FLAGS.get_key_flags_for_module(sys.modules[__name__])
    workloads = {ref: load_workload(ref, FLAGS.framework, FLAGS.data_dir) for ref in workload_refs}
    if runtime is not None:
        runtime.code_paths = _code_outside_image(submissions, workload_refs)
        containers.probe(runtime, FLAGS.framework, workload_refs)
    for workload in workloads.values():
        workload.data_hash()  # a missing dataset fails here, before any calibration or record
    scales = _budget_scales(workloads, runtime)
    return [
        Experiment(
            workload=workloads[ref], workload_ref=ref,
            framework=FLAGS.framework, submission=submission, ruleset=FLAGS.tuning_ruleset, space=space,
            num_trials=FLAGS.num_tuning_trials if space is not None else 1, num_studies=FLAGS.num_studies,
            root=Path(FLAGS.experiment_dir) / FLAGS.experiment_name, rng_seed=FLAGS.rng_seed,
            max_global_steps=FLAGS.max_global_steps, eval_every_steps=FLAGS.eval_every_steps,
            num_devices=FLAGS.num_devices, flags={f.name: f.value for f in key_flags}, **scales[ref],
            container=runtime.container_facts(ref) if runtime is not None else None,
        )
        for ref in workload_refs
        for submission, space in zip(submissions, spaces)
    ]


def _budget_scales(workloads: dict, runtime: containers.Runtime | None) -> dict[str, dict]:
    """Per workload (keyed as `workloads`): its budget scale, where the scale comes from, and the machine profile
    (measured now, once, for calibrated workloads the profile of this machine lacks; with --docker, the
    image's profile, measured in a container)."""
    if FLAGS.budget_scale is not None:
        return {ref: {"budget_scale": FLAGS.budget_scale, "budget_scale_source": "flag"} for ref in workloads}
    if runtime is None:
        profile = calibrate.ensure(list(workloads.values()))
    else:
        calibrated = [ref for ref, w in workloads.items() if machine_profile.calibrated(w)]
        profile = containers.calibrate(runtime, calibrated, machine_profile.profile_dir()) if calibrated else None
    return {
        ref: {"budget_scale": machine_profile.scale(profile, w), "budget_scale_source": "profile",
                 "machine_profile": machine_profile.trial_record(profile, w)}
        if machine_profile.calibrated(w) else {}
        for ref, w in workloads.items()
    }


def execute(trials: list[PlannedTrial], runtime: containers.Runtime | None = None,
            slurm_request: slurm.SlurmRequest | None = None) -> dict[Path, str]:
    """Run the trials with the chosen executor (in containers with --docker); returns each trial directory's outcome."""
    outcomes: dict[Path, str] = {}
    progress = SweepProgress(len(trials))
    labels = {t.dir: t.label for t in trials}
    budget = max((t.experiment.budget_sec for t in trials), default=0.0)
    limits = Limits(FLAGS.trial_timeout_sec or 3 * budget + 300, FLAGS.trial_memory_gb)

    def on_start(trial_dir: Path) -> None:
        progress.on_start(labels[trial_dir])

    def on_end(trial_dir: Path, outcome: str) -> None:
        outcomes[trial_dir] = outcome
        progress.on_end(labels[trial_dir], outcome)

    try:
        if FLAGS.executor == "inline":
            for trial in trials:
                on_start(trial.dir)
                try:
                    outcome = "failed" if run_trial_dir(trial.dir).status == "failed" else "done"
                except Locked as exc:
                    print(f"not run: {exc}", file=sys.stderr)
                    outcome = "locked"
                on_end(trial.dir, outcome)
        elif FLAGS.executor == "ray":
            run_ray([t.dir for t in trials], limits, FLAGS.ray_address, FLAGS.max_workers, on_start, on_end)
        elif FLAGS.executor == "slurm":
            folder = Path(FLAGS.experiment_dir) / FLAGS.experiment_name / "slurm"
            slurm.run_slurm([t.dir for t in trials], limits, slurm_request, folder, on_start, on_end)
        else:
            start = None if runtime is None else containers.trial_starter(
                runtime, Path(FLAGS.experiment_dir) / FLAGS.experiment_name, FLAGS.max_workers, limits.wall_sec)
            run_local([t.dir for t in trials], limits, FLAGS.max_workers, on_start, on_end, start)
    finally:
        progress.close()
    return outcomes


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UserInputError("--executor ray needs Ray: pip install 'timetrial[ray]'")
    slurm_request = _slurm_request()
    runtime = _open_container_runtime()
    planned = plan(experiments(runtime), FLAGS.overwrite, FLAGS.rerun_failed)
    to_run = [t for t in planned if t.action not in ("skip", "locked")]
    if to_run:
        _check_writable(Path(FLAGS.experiment_dir) / FLAGS.experiment_name)
    for trial in to_run:
        prepare(trial)
    outcomes = execute(to_run, runtime, slurm_request)
    root = Path(FLAGS.experiment_dir) / FLAGS.experiment_name
    print(f"run records: {root}")
    print("\n".join(describe(t) for t in planned))
    contended = [t for t in planned if read_json(t.dir / "summary.json").get("contended")]
    if contended:
        print(f"warning: {len(contended)} of {len(planned)} trials ran their timed steps while other processes used "
              "this machine's CPUs (marked contended above): their times are not comparable with a quiet machine's; "
              "rerun them on an idle machine (scoring marks them, and --exclude_contended leaves them out)",
              file=sys.stderr)
    print(f"leaderboard: python -m scoring.report {root} --out {root / 'report'}")
    unfinished = any(t.action == "locked" for t in planned)
    return 1 if unfinished or any(o in ("failed", "interrupted", "locked") for o in outcomes.values()) else 0


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
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoints", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(run, flags_parser=parse_flags)
