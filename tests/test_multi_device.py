"""PyTorch trials on several devices (`--num_devices`): one process per device under torchrun, the model in
DistributedDataParallel, on CPU processes (gloo).

The batch size is global: a 2-process trial must train exactly as a 1-process one with the same global
batch (the gradient of the mean loss over the global batch, whatever the split), evaluate to the same
metrics, write its records from rank 0 alone, and resume after a kill -9 of the process that started it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from support import REPO, TOY_WORKLOAD, run_submit
from harness.backends.torch import distributed
from harness.records import TrialRecord, read_jsonl_prefix
from harness.trial import OneDevice, check_divisible
from harness.errors import UserInputError

# The toy workload with a loss mask that splits unevenly across the two halves of a batch (class 2 does not
# count): a process's mean loss over its half is then not the global mean, and only the loss and example
# count summed over the processes give the 1-process gradient. Evaluation batches of 21 leave a last batch
# of one example (one process gets an empty part); `order` is a metric of the concatenated per-example
# scores that changes if they come back out of order.
MASKED_TOY = f"""
import importlib.util
import numpy as np
import torch

_spec = importlib.util.spec_from_file_location("timetrial_toy_base", {str(TOY_WORKLOAD / "torch.py")!r})
_toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_toy)


class Workload(_toy.Workload):
    name = "masked_toy"
    eval_batch_size = 21

    def host_batch(self, split, index):
        batch = super().host_batch(split, index)
        return {{**batch, "weights": (batch["targets"] != 2).astype(np.float32)}}

    def eval_sums(self, logits, batch):
        return {{**super().eval_sums(logits, batch), "scores": logits.max(-1).values}}

    def metrics_from_sums(self, sums):
        scores = sums.pop("scores")
        return {{**super().metrics_from_sums(sums), "order": float(np.dot(np.arange(len(scores)), scores))}}
"""

# SGD that logs, at every step, what AlgoPerf's `pytorch_setup()` says in the process that takes it.
LOGGING_SGD = """
import time
import torch
from algoperf.pytorch_utils import pytorch_setup

SLEEP = {sleep}


class LoggingSGD(torch.optim.SGD):
    def __init__(self, params, workload):
        super().__init__(params, lr=0.5)
        self.workload = workload

    def step(self, closure=None):
        time.sleep(SLEEP)
        group = self.param_groups[0]
        group["steps"] = group.get("steps", 0) + 1  # in the state dict: counts on after a resume
        use_ddp, rank, device, n_gpus = pytorch_setup()
        self.workload.metrics_logger.append_scalar_metrics({{"ddp": use_ddp, "rank": rank}}, group["steps"])
        return super().step(closure)


def make_optimizer(model, hyperparameters, workload):
    return LoggingSGD(model.parameters(), workload)
"""

FAIL_ON_RANK_1 = """
import torch
from algoperf.pytorch_utils import pytorch_setup


class FailingSGD(torch.optim.SGD):
    def step(self, closure=None):
        if pytorch_setup()[1] == 1:
            raise RuntimeError("rank 1 gives up")
        return super().step(closure)


def make_optimizer(model, hyperparameters, workload):
    return FailingSGD(model.parameters(), lr=0.1)
"""


def masked_toy(tmp_path: Path) -> Path:
    folder = tmp_path / "masked_toy"
    folder.mkdir(exist_ok=True)
    (folder / "torch.py").write_text(MASKED_TOY)
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def trial_args(tmp_path: Path, submission: Path, name: str, num_devices: int, *extra: str) -> list[str]:
    return ["--workload", str(masked_toy(tmp_path)), "--submission", str(submission), "--tuning_ruleset", "self",
            "--experiment_dir", str(tmp_path / "runs"), "--experiment_name", name, "--data_dir", str(tmp_path / "data"),
            "--num_devices", str(num_devices), "--budget_scale", "1", *extra]


def trial_dir(tmp_path: Path, name: str, submission: str) -> Path:
    return tmp_path / "runs" / name / "masked_toy_pytorch" / submission / "study_0" / "trial_1"


def rows(trial: Path, name: str = "eval.jsonl") -> list[dict]:
    return read_jsonl_prefix(trial / name)


def metrics(row: dict) -> dict:
    return {key: value for key, value in row.items() if "/" in key}


def test_a_two_process_trial_trains_and_evaluates_as_one_process_with_the_same_global_batch(tmp_path):
    sgd = write(tmp_path / "logging_sgd.py", LOGGING_SGD.format(sleep=0))
    steps = ("--max_global_steps", "20", "--eval_every_steps", "5")
    for name, num_devices in (("one", 1), ("two", 2)):
        result = run_submit(*trial_args(tmp_path, sgd, name, num_devices, *steps))
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = trial_dir(tmp_path, "one", "logging_sgd"), trial_dir(tmp_path, "two", "logging_sgd")

    meta = json.loads((two / "meta.json").read_text())
    assert (meta["num_devices"], meta["hardware"]["num_devices"], meta["flags"]["num_devices"]) == (2, 2, 2)
    assert json.loads((one / "meta.json").read_text())["hardware"]["fingerprint"] != meta["hardware"]["fingerprint"]
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["status"], summary["global_step"], summary["batch_size"]) == ("stopped", 20, 16)

    # One writer: rank 0's records, each row once; both ranks ran under DDP and only rank 0's log is kept.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert [r["global_step"] for r in rows(two)] == [r["global_step"] for r in rows(one)] == [1, 5, 10, 15, 20]
    logged = rows(two, "metrics.jsonl")
    assert [r["global_step"] for r in logged] == list(range(1, 21))
    assert {(r["ddp"], r["rank"]) for r in logged} == {(True, 0)}
    assert {(r["ddp"], r["rank"]) for r in rows(one, "metrics.jsonl")} == {(False, 0)}

    # The same training: parameters after 20 steps, training losses (global means) and every evaluation.
    # Tolerance: float32 sums taken in another order (two halves, then across processes), 1e-5 relative.
    final_one = torch.load(one / "checkpoint" / "latest.pt", weights_only=True)["model"]
    final_two = torch.load(two / "checkpoint" / "latest.pt", weights_only=True)["model"]
    assert final_one.keys() == final_two.keys() == {"head.weight", "head.bias"}  # saved unwrapped from DDP
    for key in final_one:
        torch.testing.assert_close(final_two[key], final_one[key], rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in rows(two, "train.jsonl")] == pytest.approx([r["loss"] for r in rows(one, "train.jsonl")],
                                                                          rel=1e-5)
    for row_one, row_two in zip(rows(one), rows(two)):
        assert metrics(row_two) == pytest.approx(metrics(row_one), rel=1e-5)
    assert rows(one)[-1]["train/loss"] < rows(one)[0]["train/loss"]  # it trained


def test_evaluation_over_two_processes_gives_the_metrics_of_one(tmp_path):
    """The same parameters evaluated by one process and by two (each its part of every batch, the last
    batch of one example leaving one process an empty part): the same metrics, scores in the same order."""
    folder = masked_toy(tmp_path)
    script = write(tmp_path / "evaluate.py", f"""
import json, sys
import torch, torch.distributed as dist
from harness.discovery import load_workload
from harness.trial import OneDevice

distributed = len(sys.argv) > 2
if distributed:
    dist.init_process_group("gloo")
workload = load_workload({str(folder)!r}, "pytorch", {str(tmp_path / "data")!r})
devices = workload.use_devices(2) if distributed else OneDevice()
model, state = devices.place_model(*workload.init_model_fn(7))
results = workload.eval_model(workload.eval_batch_size, model, state, 0, str(workload.data_dir), None, 1)
if not distributed or dist.get_rank() == 0:
    open(sys.argv[1], "w").write(json.dumps(results))
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "two.json"), "distributed"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    results_one = json.loads((tmp_path / "one.json").read_text())
    results_two = json.loads((tmp_path / "two.json").read_text())
    assert results_two.keys() == results_one.keys() and "validation/order" in results_one
    assert results_two == pytest.approx(results_one, rel=1e-6)
    assert {k: v for k, v in results_two.items() if "error_rate" in k} == \
        {k: v for k, v in results_one.items() if "error_rate" in k}


def test_kill_9_of_the_trials_process_ends_every_rank_and_a_rerun_resumes(tmp_path):
    """`--executor inline`: submit.py itself holds the trial and started torchrun; nothing but the ranks'
    death signals can end them when it is killed."""
    sgd = write(tmp_path / "logging_sgd.py", LOGGING_SGD.format(sleep=0.1))
    args = trial_args(tmp_path, sgd, "killed", 2, "--max_global_steps", "60", "--eval_every_steps", "5")
    trial = trial_dir(tmp_path, "killed", "logging_sgd")
    first = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args, "--executor", "inline"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(rows(trial)) < 3:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        processes = psutil.Process(first.pid).children(recursive=True)
        assert sum("rank" in p.cmdline() for p in processes) == 2  # the two ranks (and the agent above them)
        first.send_signal(signal.SIGKILL)
        first.wait()
        gone, alive = psutil.wait_procs(processes, timeout=20)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        first.kill()
    before = rows(trial)
    assert json.loads((trial / "summary.json").read_text())["status"] == "running"

    resumed = run_submit(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = rows(trial)
    steps = [r["global_step"] for r in after]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    kept = [r for r in after if r["preemption_count"] == 0]  # the rows up to the checkpoint, as written then
    assert len(kept) >= 2 and kept[:-1] == before[: len(kept) - 1]
    assert after[-1]["preemption_count"] == 1
    assert json.loads((trial / "summary.json").read_text())["status"] == "stopped"
    logged = [r["global_step"] for r in rows(trial, "metrics.jsonl")]
    assert logged == list(range(1, 61))  # every step once: cut back to the checkpoint, then continued


def test_a_rank_that_fails_alone_fails_the_trial_with_its_reason(tmp_path):
    failing = write(tmp_path / "failing.py", FAIL_ON_RANK_1)
    result = run_submit(*trial_args(tmp_path, failing, "failed", 2, "--max_global_steps", "5"))
    assert result.returncode == 1
    summary = json.loads((trial_dir(tmp_path, "failed", "failing") / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "rank 1" in summary["stop_reason"] and "RuntimeError: rank 1 gives up" in summary["stop_reason"]
    assert "Traceback" in summary["error"]


# ----- the parts, without processes -----
def test_a_global_batch_that_does_not_split_evenly_is_refused_with_what_to_do():
    class Three(OneDevice):
        count = 3

    check_divisible(48, Three())
    with pytest.raises(UserInputError, match="global batch size 16 does not split evenly across the trial's 3 devices"):
        check_divisible(16, Three())


def test_each_rank_takes_its_contiguous_part_and_empty_parts_are_stand_ins():
    index = np.array([5, 3, 9, 1, 7, 2])
    assert [distributed.train_part(index, r, 2).tolist() for r in range(2)] == [[5, 3, 9], [1, 7, 2]]
    parts = [distributed.eval_part(np.array([4, 8, 6]), r, 2) for r in range(2)]
    assert [(p.tolist(), real) for p, real in parts] == [([4, 8], True), ([6], True)]
    part, real = distributed.eval_part(np.array([4]), 1, 2)
    assert (part.tolist(), real) == ([4], False)


def test_eval_sums_combine_across_ranks_in_rank_order_without_stand_ins():
    rank0 = [{"loss": 1.5, "scores": np.array([1.0, 2.0])}, {"loss": 0.25, "scores": np.array([5.0])}]
    rank1 = [{"loss": 2.0, "scores": np.array([3.0])}, {"loss": 9.0, "scores": np.array([5.0])}]
    combined = distributed.combine_eval_sums([rank0, rank1], [[True, True], [True, False]])
    assert [c["loss"] for c in combined] == [3.5, 0.25]
    assert [c["scores"].tolist() for c in combined] == [[1.0, 2.0, 3.0], [5.0]]


def test_a_record_that_does_not_write_keeps_its_rows_in_memory(tmp_path):
    record = TrialRecord(tmp_path / "trial", writes=False)
    record.write_summary({"status": "running"})
    record.add_eval({"global_step": 1})
    record.add_train([{"global_step": 1, "loss": 0.5}])
    assert record.eval_rows == [{"global_step": 1}] and not (tmp_path / "trial").exists()


def test_ddp_names_of_parameters_find_their_types():
    types = distributed.ParameterTypes({"head.weight": "W"})
    assert types["module.head.weight"] == types["head.weight"] == "W" and list(types) == ["head.weight"]
    with pytest.raises(KeyError):
        types["module.tail.weight"]


# ----- the library's curvature submissions (full API, more than one backward pass per forward pass) -----
@pytest.mark.parametrize("submission", ["sophia_h", "adahessian", "mezo"])
def test_a_curvature_submission_on_two_processes_trains_as_on_one(tmp_path, submission):
    """Hutchinson probes and MeZO's directions come from the same seed in every process, so two processes
    must take the steps of one on the whole batch: gradients, Hessian-vector products and losses are
    means over the global batch, averaged over the processes outside DDP's hooks. Tolerance: float32 sums
    in another order, amplified by the curvature estimates' divisions (1e-4 relative)."""
    steps = ("--max_global_steps", "12", "--eval_every_steps", "4")
    for name, num_devices in (("one", 1), ("two", 2)):
        result = run_submit(*trial_args(tmp_path, REPO / "submissions" / submission, name, num_devices, *steps))
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = trial_dir(tmp_path, "one", submission), trial_dir(tmp_path, "two", submission)
    final_one = torch.load(one / "checkpoint" / "latest.pt", weights_only=True)["model"]
    final_two = torch.load(two / "checkpoint" / "latest.pt", weights_only=True)["model"]
    for key in final_one:
        torch.testing.assert_close(final_two[key], final_one[key], rtol=1e-4, atol=1e-6)
    assert rows(one)[-1]["train/loss"] != rows(one)[0]["train/loss"]  # it moved
    for row_one, row_two in zip(rows(one), rows(two)):
        assert metrics(row_two) == pytest.approx(metrics(row_one), rel=1e-4)


def test_sophia_g_trains_on_two_processes(tmp_path):
    """Sophia-G's labels are sampled per process from its own rows, so its curvature differs from one
    process's draw on the whole batch; its two sampled-label and real backward passes per forward pass must
    run under --num_devices 2 and train."""
    steps = ("--max_global_steps", "12", "--eval_every_steps", "4")
    result = run_submit(*trial_args(tmp_path, REPO / "submissions" / "sophia_g", "two", 2, *steps))
    assert result.returncode == 0, result.stderr[-3000:]
    trial = trial_dir(tmp_path, "two", "sophia_g")
    assert json.loads((trial / "summary.json").read_text())["status"] == "stopped"
    assert rows(trial)[-1]["train/loss"] < rows(trial)[0]["train/loss"]
