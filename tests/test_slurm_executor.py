"""`--executor slurm`: one submitit job per trial, preemption and requeue, the sbatch request, bad input.

There is no Slurm here: end-to-end runs use submitit's LocalExecutor (TIMETRIAL_SLURM_CLUSTER=local),
whose jobs run the same call on this machine, take SIGUSR2 as the checkpoint signal and requeue
themselves as a Slurm job does; the sbatch script is checked as handed to a stand-in `sbatch`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import submitit

from support import REPO, run_submit, toy_variant
from harness import slurm
from harness.errors import UserInputError
from harness.executors import Limits
from harness.records import TrialRecord

SLOW_SGD = '''
import time
import torch


class SlowSGD(torch.optim.SGD):
    def step(self, closure=None):
        time.sleep(0.03)
        return super().step(closure)


def make_optimizer(model, hyperparameters, workload):
    return SlowSGD(model.parameters(), lr=hyperparameters.learning_rate)
'''
STEPS = 80
SLURM = ["--executor", "slurm", "--slurm_gpus_per_trial", "0"]


@pytest.fixture(autouse=True)
def ctrl_c_reaches_children():
    """Processes started here get SIGINT's default action even where this one ignores it (a background job,
    or an earlier test in this process, passes the ignore on to children): Ctrl-C and submitit's local
    `cancel` are SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def local_cluster() -> dict[str, str]:
    """The environment of a `submit.py` whose Slurm jobs run here (submitit's LocalExecutor)."""
    return {**os.environ, slurm.CLUSTER_VARIABLE: "local"}


def submit_args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    """Slow SGD on the toy workload, whose targets it never reaches (so trials run to --max_global_steps)."""
    workload = tmp_path / "toy_far"
    if not workload.exists():
        toy_variant(tmp_path, "toy_far", validation_target_value=-1.0, test_target_value=-1.0)
    submission = tmp_path / "slow.py"
    submission.write_text(SLOW_SGD)
    space = tmp_path / "space.json"
    space.write_text(json.dumps([{"learning_rate": 0.05}, {"learning_rate": 0.1}]))
    return ["--workload", str(workload), "--submission", str(submission), "--tuning_search_space", str(space),
            "--experiment_dir", str(tmp_path / "runs"), "--experiment_name", name, "--data_dir", str(tmp_path / "data"),
            *extra]


def trial_dir(tmp_path: Path, name: str, index: int = 1) -> Path:
    return tmp_path / "runs" / name / "toy_far_pytorch" / "slow" / "study_0" / f"trial_{index}"


def rows(trial: Path) -> list[dict]:
    path = trial / "eval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def metrics(trial: Path) -> list[dict]:
    """The evaluation rows without their times: what a resumed trial must reproduce."""
    return [{k: v for k, v in r.items() if "/" in k or k == "global_step"} for r in rows(trial)]


def summary(trial: Path) -> dict:
    return json.loads((trial / "summary.json").read_text())


def job_folders(tmp_path: Path, name: str) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "runs" / name / "slurm").glob("*/*_submitted.pkl"))


def worker_of(trial: Path) -> psutil.Process | None:
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] and process.info["cmdline"][-2:] == ["harness.worker", str(trial)]:
            return process
    return None


def wait_for_rows(trial: Path, count: int, sweep: subprocess.Popen) -> psutil.Process:
    """Wait until the trial has `count` evaluation rows; its worker then."""
    deadline = time.monotonic() + 120
    while len(rows(trial)) < count or (worker := worker_of(trial)) is None:
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "the trial did not get going"
        time.sleep(0.05)
    return worker


@pytest.mark.parametrize("wall_sec, minutes", [(480.0, 18), (1.0, 11), (3 * 43_336 + 300, 2182)])
def test_a_jobs_time_limit_is_the_trial_wall_clock_limit_plus_the_margin_in_whole_minutes(wall_sec, minutes):
    assert slurm.time_limit_min(Limits(wall_sec=wall_sec)) == minutes


def test_a_job_needs_a_wall_clock_limit_for_its_time_limit():
    with pytest.raises(ValueError, match="wall-clock limit"):
        slurm.time_limit_min(Limits())


@pytest.mark.parametrize("items, parsed", [
    (["account=my_lab", "qos=high"], {"account": "my_lab", "qos": "high"}),
    (["exclusive"], {"exclusive": True}),
    (["--mail-type=END"], {"mail-type": "END"}),
    ([], {}),
])
def test_slurm_parameters_are_sbatch_options(items, parsed):
    assert slurm.parse_parameters(items) == parsed


@pytest.mark.parametrize("item, says", [
    ("account=", "not name=value"),
    ("=x", "not name=value"),
    ("a b=c", "not name=value"),
    ("time=60", "--trial_timeout_sec"),
    ("gpus-per-node=2", "--slurm_gpus_per_trial"),
    ("partition=gpu", "--slurm_partition"),
    ("mem=10G", "--trial_memory_gb"),
    ("signal=USR1@60", "TimeTrial itself"),
])
def test_slurm_parameters_refuse_what_is_not_an_option_or_is_set_elsewhere(item, says):
    with pytest.raises(UserInputError, match=says):
        slurm.parse_parameters([item])


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$(dirname "$0")/script.sh"
echo "Submitted batch job 4242"
"""


@pytest.mark.parametrize("gpus", [4, 0])
def test_the_sbatch_script_asks_for_the_time_gpus_partition_memory_and_requeue(tmp_path, monkeypatch, gpus):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    request = slurm.SlurmRequest(gpus, partition="gpu", cpus=8, parameters={"account": "my_lab", "exclusive": True})
    limits = Limits(wall_sec=1000.0, memory_gb=7.5)
    executor = slurm.make_executor(tmp_path / "slurm", request, limits, "slurm")
    trial = tmp_path / "runs" / "toy_pytorch" / "slow" / "study_0" / "trial_1"
    executor.update_parameters(name=slurm.job_name(trial))
    job = executor.submit(slurm.TrialJob(trial, limits))

    assert job.job_id == "4242"
    lines = (bin_dir / "script.sh").read_text().splitlines()
    expected = ["#SBATCH --time=27", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=8704MB",
                "#SBATCH --account=my_lab", "#SBATCH --exclusive", "#SBATCH --requeue", "#SBATCH --signal=USR2@90",
                "#SBATCH --job-name=timetrial:toy_pytorch/slow/study_0/trial_1",
                f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"]
    assert set(expected) <= set(lines)
    assert [line for line in lines if "gpus" in line] == (["#SBATCH --gpus-per-node=4"] if gpus else [])
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
    call = submitit.helpers.DelayedSubmission.load(tmp_path / "slurm" / "4242" / "4242_submitted.pkl")
    assert isinstance(call.function, slurm.TrialJob) and call.function.trial_dir == trial
    assert call.function.limits == limits


def test_two_trials_run_as_two_jobs_whose_outcomes_are_reported(tmp_path):
    result = run_submit(*submit_args(tmp_path, "e", "--num_tuning_trials", "2", "--max_global_steps", "5", *SLURM), env=local_cluster())
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [trial_dir(tmp_path, "e", index) for index in (1, 2)]
    for trial in trials:
        assert summary(trial)["status"] == "stopped" and [r["global_step"] for r in rows(trial)] == [1, 2, 3, 4, 5]
        assert "step 5" in (trial / "log.txt").read_text()  # the worker's output, captured by its job
    calls = [submitit.helpers.DelayedSubmission.load(next(f.glob("*_submitted.pkl"))).function
             for f in job_folders(tmp_path, "e")]
    assert sorted(call.trial_dir for call in calls) == [t.resolve() for t in trials]
    assert "[2/2]" in result.stderr and "2 done" in result.stderr
    assert result.stdout.count("target not reached before max_global_steps at step 5") == 2


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The evaluation rows (times aside) of the trial run by one job that nothing interrupts."""
    tmp_path = tmp_path_factory.mktemp("straight")
    args = submit_args(tmp_path, "p", "--max_global_steps", str(STEPS), "--eval_every_steps", "10", *SLURM)
    result = run_submit(*args, env=local_cluster())
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics(trial_dir(tmp_path, "p"))


@pytest.mark.parametrize("to_worker_first", [None, signal.SIGUSR2], ids=["to_the_job", "to_every_process"])
def test_a_preempted_job_is_requeued_and_resumes_its_trial_to_the_same_rows(tmp_path, uninterrupted, to_worker_first):
    """SIGUSR2 is submitit's checkpoint signal. Slurm sends it (and SIGTERM) to every process of the job, so the
    worker may die of it before its supervisor checkpoints: its trial is interrupted, not failed, either way."""
    args = submit_args(tmp_path, "p", "--max_global_steps", str(STEPS), "--eval_every_steps", "10", *SLURM)
    sweep = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO, env=local_cluster(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = trial_dir(tmp_path, "p")
    worker = wait_for_rows(trial, 2, sweep)
    job = worker.parent()
    assert "submitit.core._submit" in " ".join(job.cmdline())
    if to_worker_first is not None:
        worker.send_signal(to_worker_first)
        worker.wait(10)
        time.sleep(3 * slurm.POLL_SEC)  # the job's supervisor has seen its worker die before the checkpoint signal
    job.send_signal(signal.SIGUSR2)
    out, err = sweep.communicate(timeout=300)

    assert sweep.returncode == 0, err[-3000:]
    after = rows(trial)
    assert summary(trial)["status"] == "stopped" and after[-1]["global_step"] == STEPS
    counts = [r["preemption_count"] for r in after]
    assert counts[:2] == [0, 0] and counts[-1] == 1 and counts == sorted(counts)
    assert metrics(trial) == uninterrupted
    times = [r["accumulated_submission_time"] for r in after]
    assert times == sorted(times)
    (folder,) = job_folders(tmp_path, "p")
    log = next(folder.glob("*_log.out")).read_text()
    assert "this job is preempted" in log and "Requeued job" in log and log.count("Starting with") == 2
    assert "failed" not in out and "interrupted" not in out


def test_ctrl_c_cancels_the_jobs_and_a_rerun_resumes_the_trial(tmp_path):
    args = submit_args(tmp_path, "c", "--max_global_steps", "60", "--eval_every_steps", "10", *SLURM)
    sweep = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO, env=local_cluster(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = trial_dir(tmp_path, "c")
    worker = wait_for_rows(trial, 2, sweep)
    job = worker.parent()
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "run the same command again to resume" in err
    gone, alive = psutil.wait_procs([worker, job], timeout=15)
    assert not alive, "a cancelled job left its processes running"
    assert summary(trial)["status"] == "running"

    rerun = run_submit(*args, env=local_cluster())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert summary(trial)["status"] == "stopped" and rows(trial)[-1]["preemption_count"] == 1


FAILING = submitit.helpers.CommandFunction(["sh", "-c", "echo the node lost its filesystem >&2; exit 3"])
SLEEPING = submitit.helpers.CommandFunction(["sleep", "60"])


@pytest.fixture
def local_executor(tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="local")
    executor.update_parameters(timeout_min=2)
    return executor


def test_a_job_that_fails_outside_its_trial_records_the_trial_failed_with_the_reason(tmp_path, local_executor):
    trial = tmp_path / "trial"
    TrialRecord(trial).write_summary({"status": "running", "global_step": 7})
    job = local_executor.submit(FAILING)
    job.wait()
    assert slurm.job_outcome(job, trial) == "failed"
    recorded = summary(trial)
    assert recorded["status"] == "failed" and recorded["global_step"] == 7
    assert recorded["stop_reason"].startswith(f"the Slurm job {job.job_id} ended outside the trial")
    assert "the node lost its filesystem" in recorded["error"]


def test_a_cancelled_job_leaves_its_trial_interrupted(tmp_path, local_executor):
    trial = tmp_path / "trial"
    TrialRecord(trial).write_summary({"status": "running", "global_step": 7})
    job = local_executor.submit(SLEEPING)
    time.sleep(1.0)
    job.cancel()
    job.wait()
    assert slurm.job_outcome(job, trial) == "interrupted"
    assert summary(trial) == {"status": "running", "global_step": 7}


def test_a_job_that_fails_after_its_trial_ended_keeps_the_trials_record(tmp_path, local_executor):
    trial = tmp_path / "trial"
    TrialRecord(trial).write_summary({"status": "reached", "global_step": 9})
    job = local_executor.submit(FAILING)
    job.wait()
    assert slurm.job_outcome(job, trial) == "done"
    assert summary(trial) == {"status": "reached", "global_step": 9}


@pytest.mark.parametrize("extra, env_change, says", [
    (["--slurm_partition", "gpu"], {}, "--slurm_partition only apply with --executor slurm"),
    ([*SLURM, "--max_workers", "2"], {}, "--max_workers does not apply with --executor slurm"),
    ([*SLURM, "--slurm_parameters", "time=60"], {}, "time is set by --trial_timeout_sec"),
    ([*SLURM, "--slurm_parameters", "account="], {}, "'account=' is not name=value"),
    (SLURM, {"cluster": None}, "no srun on this machine's PATH: run submit.py on a Slurm login node"),
    (SLURM, {"cluster": "kubernetes"}, "TIMETRIAL_SLURM_CLUSTER=kubernetes"),
    (SLURM, {"no_submitit": True}, "--executor slurm needs submitit: pip install submitit"),
])
def test_bad_slurm_input_is_one_error_line_before_anything_is_written(tmp_path, extra, env_change, says):
    env = {**local_cluster(), "PATH": str(tmp_path)}  # no srun, sbatch or scancel
    if "cluster" in env_change:
        del env[slurm.CLUSTER_VARIABLE]
        if env_change["cluster"] is not None:
            env[slurm.CLUSTER_VARIABLE] = env_change["cluster"]
    if env_change.get("no_submitit"):  # a submitit that does not import, first on the path
        (tmp_path / "shadow" / "submitit").mkdir(parents=True)
        (tmp_path / "shadow" / "submitit" / "__init__.py").write_text("raise ImportError('No module named submitit')\n")
        env["PYTHONPATH"] = str(tmp_path / "shadow")
    result = run_submit(*submit_args(tmp_path, "bad", "--max_global_steps", "2"), *extra, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_job_that_sbatch_refuses_is_one_clear_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n"),
                       ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    trial, started = tmp_path / "runs" / "toy_far_pytorch" / "slow" / "study_0" / "trial_1", []
    with pytest.raises(UserInputError, match=f"sbatch refused the job of {trial}: sbatch: error: invalid partition"):
        slurm.run_slurm([trial], Limits(wall_sec=60.0), slurm.SlurmRequest(partition="nope"), tmp_path / "slurm",
                        started.append, lambda *_: pytest.fail("no job ran"), cluster_name="slurm")
    assert started == [trial]
