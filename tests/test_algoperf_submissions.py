"""Submissions written as published AlgoPerf submissions are (tests/algoperf_style/) run unmodified:
AlgoPerf's import names, `pytorch_setup()`, `get_batch_size` that knows only AlgoPerf's workloads,
`train_state`, `metrics_logger`, state the checkpoint must carry, and files named `submission.py`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, TOY_WORKLOAD, NullProgress, run_submit
from harness import spec
from harness.backends.torch import process as torch_process
from harness.discovery import load_submission, load_workload
from harness.errors import UserInputError
from harness.metrics_logger import MetricsLogger
from harness.records import TrialRecord, read_json, read_jsonl_prefix
from harness.trial import run_trial

STYLE = REPO / "tests" / "algoperf_style"
DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
MINI = {"mri_reconstruction": 16, "adult_ctr": 8192}  # two mini workloads (cheap evaluations), reference batch sizes


def trials(root: Path) -> dict[tuple[str, str], Path]:
    return {(t.parents[2].name, t.parents[1].name): t for t in sorted(root.glob("*/*/study_0/trial_1"))}


def assert_trained_unmodified(trial: Path, workload: str, submission: str) -> None:
    summary, meta = read_json(trial / "summary.json"), read_json(trial / "meta.json")
    assert summary["status"] in ("stopped", "budget", "reached"), summary.get("error")
    assert meta["submission"] == submission and meta["submission_path"].endswith(f"{submission}/submission.py")
    # get_batch_size knows only AlgoPerf's names: the workload's reference batch size, said once.
    assert summary["batch_size"] == MINI[workload]
    assert [w for w in summary["warnings"] if "get_batch_size" in w] == [
        w for w in summary["warnings"] if f"get_batch_size({workload!r})" in w and f"batch size {MINI[workload]}" in w
    ] != []
    assert not [w for w in summary["warnings"] if w.startswith("checkpoint")]
    assert (trial / "checkpoint" / "latest.pt").exists()
    rows = read_jsonl_prefix(trial / "eval.jsonl")
    assert len(rows) >= 2 and rows[-1]["validation/loss"] < rows[0]["validation/loss"] - 0.02, rows


def test_published_style_external_tuning_submissions_run_unmodified_on_two_mini_workloads(tmp_path):
    pairs = {"mri_reconstruction": STYLE / "nadamw_warmup_cosine" / "submission.py",
             "adult_ctr": STYLE / "lawa_inner_loop"}  # a submission file, and a folder
    for workload, submission in pairs.items():
        result = run_submit(
            "--workload", workload, "--submission", str(submission), "--max_global_steps", "20",
            "--eval_every_steps", "10", "--experiment_dir", str(tmp_path), "--data_dir", str(DATA_DIR),
        )
        assert result.returncode == 0, result.stderr[-3000:]
    found = trials(tmp_path / "default")
    assert set(found) == {("mri_reconstruction_pytorch", "nadamw_warmup_cosine"),
                          ("adult_ctr_pytorch", "lawa_inner_loop")}
    for (workload_dir, submission), trial in found.items():
        assert_trained_unmodified(trial, workload_dir.removesuffix("_pytorch"), submission)
    logged = read_jsonl_prefix(found[("mri_reconstruction_pytorch", "nadamw_warmup_cosine")] / "metrics.jsonl")
    assert [row["global_step"] for row in logged] == [0, 5, 10, 15]
    assert logged[-1]["loss"] < logged[0]["loss"] and logged[0]["lr"] < logged[1]["lr"]  # warmup


def test_published_style_self_tuning_submission_keeps_its_hyperparameters_in_the_optimizer_state(tmp_path):
    result = run_submit(
        "--workload", ",".join(MINI), "--submission", str(STYLE / "lion_self_tuned" / "submission.py"),
        "--tuning_ruleset", "self", "--max_global_steps", "20", "--eval_every_steps", "10",
        "--experiment_dir", str(tmp_path), "--data_dir", str(DATA_DIR),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = trials(tmp_path / "default")
    assert len(found) == 2
    for (workload_dir, submission), trial in found.items():
        assert_trained_unmodified(trial, workload_dir.removesuffix("_pytorch"), submission)
        assert [row["global_step"] for row in read_jsonl_prefix(trial / "metrics.jsonl")] == list(range(20))


SGD_SUBMISSION = """
import torch
from algoperf import spec

def get_batch_size(workload_name):
    return 32

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {{'optimizer': torch.optim.SGD(model_params.parameters(), lr={lr})}}

def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                  batch, loss_type, optimizer_state, eval_results, global_step, rng):
    {fail}
    optimizer_state['optimizer'].zero_grad()
    logits, model_state = workload.model_fn(current_param_container, batch, model_state,
                                            spec.ForwardPassMode.TRAIN, rng, True)
    out = workload.loss_fn(batch['targets'], logits)
    (out['summed'] / out['n_valid_examples']).backward()
    optimizer_state['optimizer'].step()
    return optimizer_state, current_param_container, model_state
"""


def write_submission(path: Path, lr: float = 0.1, fail: str = "pass") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SGD_SUBMISSION.format(lr=lr, fail=fail))
    return path


def toy_args(tmp_path: Path, *submissions: Path) -> list[str]:
    return ["--workload", str(TOY_WORKLOAD), "--submission", ",".join(map(str, submissions)),
            "--tuning_ruleset", "self", "--max_global_steps", "5", "--experiment_dir", str(tmp_path / "runs"),
            "--data_dir", str(tmp_path / "data")]


def test_submission_py_files_are_named_after_their_folders_and_each_runs(tmp_path):
    a = write_submission(tmp_path / "a" / "submission.py", lr=0.1)
    b = write_submission(tmp_path / "b" / "submission.py", lr=0.2)
    result = run_submit(*toy_args(tmp_path, a, b))
    assert result.returncode == 0, result.stderr
    found = trials(tmp_path / "runs" / "default")
    assert set(found) == {("toy_pytorch", "a"), ("toy_pytorch", "b")}
    for (_, name), trial in found.items():
        assert read_json(trial / "meta.json")["submission_path"] == str((tmp_path / name / "submission.py").resolve())
        assert read_json(trial / "summary.json")["global_step"] == 5


def test_a_sweep_whose_submissions_share_a_name_is_refused_before_anything_is_written(tmp_path):
    first = write_submission(tmp_path / "algo" / "submission.py")
    second = write_submission(tmp_path / "other" / "algo" / "submission.py")
    result = run_submit(*toy_args(tmp_path, first, second))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: submissions would share run records")
    assert str(first.resolve()) in result.stderr and str(second.resolve()) in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_failed_trial_records_the_step_it_reached(toy_workload, tmp_path):
    path = write_submission(tmp_path / "crash" / "submission.py",
                            fail="if global_step == 3: raise RuntimeError('boom at the fourth step')")
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(toy_workload, load_submission(str(path), "pytorch"), None, 0, 60.0, record, NullProgress(),
                        checkpoint=tmp_path / "trial" / "checkpoint" / "latest.pt")
    assert outcome.status == "failed" and outcome.global_step == 3
    assert outcome.stop_reason == "RuntimeError: boom at the fourth step" and "boom" in outcome.error


def test_the_aliases_live_in_the_trial_process_only_and_win_over_a_real_algoperf_there(tmp_path):
    real = tmp_path / "site" / "algoperf"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("")
    (real / "spec.py").write_text("WHO = 'real AlgoPerf'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    outside = subprocess.run([sys.executable, "-c", "import harness.discovery, algoperf.spec; print(algoperf.spec.WHO)"],
                             cwd=REPO, env=env, capture_output=True, text=True)
    assert outside.stdout.strip() == "real AlgoPerf", outside.stderr
    bare = subprocess.run([sys.executable, "-c", "import importlib.util, harness.trial; "
                           "print(importlib.util.find_spec('algoperf'), importlib.util.find_spec('algorithmic_efficiency'))"],
                          cwd=REPO, capture_output=True, text=True)
    assert bare.stdout.strip() == "None None", bare.stderr
    submission = write_submission(tmp_path / "which" / "submission.py",
                                  fail="assert spec.__name__ == 'harness.spec', spec.__name__")
    result = run_submit(*toy_args(tmp_path, submission), env=env)
    assert result.returncode == 0, result.stderr
    assert read_json(trials(tmp_path / "runs" / "default")[("toy_pytorch", "which")] / "summary.json")["status"] == "stopped"


def test_an_algoperf_module_timetrial_does_not_provide_is_one_clear_error(tmp_path):
    path = tmp_path / "partial" / "submission.py"
    path.parent.mkdir()
    path.write_text("from algoperf import param_utils, spec\n")
    with pytest.raises(UserInputError, match="algoperf.param_utils is not provided by TimeTrial's AlgoPerf "
                                             "compatibility layer; it provides algoperf.spec, algoperf.pytorch_utils, "
                                             "algoperf.jax_sharding_utils"):
        load_submission(str(path), "pytorch")


def test_a_torch_submission_does_not_import_jax_through_the_aliases():
    probe = ("import sys; from harness import algoperf_compat; algoperf_compat.install(); "
             "from algoperf import spec; from algoperf.pytorch_utils import pytorch_setup; print('jax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_a_published_style_jax_submission_runs_unmodified(tmp_path):
    workload = "mri_reconstruction"
    result = run_submit(
        "--framework", "jax", "--workload", workload, "--submission", str(STYLE / "adamw_jax_sharded"),
        "--max_global_steps", "20", "--budget_scale", "20", "--experiment_dir", str(tmp_path), "--data_dir", str(DATA_DIR),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trial = trials(tmp_path / "default")[(f"{workload}_jax", "adamw_jax_sharded")]
    summary = read_json(trial / "summary.json")
    assert summary["status"] == "stopped" and summary["global_step"] == 20, summary.get("error")
    assert summary["batch_size"] == MINI[workload]  # get_batch_size knows only AlgoPerf's names
    rows = read_jsonl_prefix(trial / "eval.jsonl")
    assert len(rows) >= 2 and rows[-1]["validation/loss"] < rows[0]["validation/loss"] - 0.02, rows
    # optax's update function, the second half of the optimizer state, is code: left out, kept fresh on resume
    assert [w for w in summary["warnings"] if w.startswith("checkpoint")] == [
        w for w in summary["warnings"] if "optimizer_state['1'] (function)" in w] != []


@pytest.mark.parametrize("answer, expected", [("raise ValueError('no')", 16), ("return None", 16), ("return 8", 8)])
def test_get_batch_size_that_does_not_know_the_workload_falls_back_to_its_reference_size(
    toy_workload, tmp_path, answer, expected
):
    path = tmp_path / "sizes.py"
    path.write_text(f"def get_batch_size(name):\n    {answer}\n"
                    "def init_optimizer_state(*args):\n    pass\ndef update_params(*args):\n    pass\n")
    size, warning = load_submission(str(path), "pytorch").batch_size(toy_workload)
    assert size == expected == (toy_workload.reference_batch_size if warning else 8)
    assert (warning is None) == (answer == "return 8")


def test_get_batch_size_with_an_impossible_answer_is_an_error(toy_workload, tmp_path):
    path = tmp_path / "zero.py"
    path.write_text("def get_batch_size(name):\n    return 0\n"
                    "def init_optimizer_state(*args):\n    pass\ndef update_params(*args):\n    pass\n")
    with pytest.raises(UserInputError, match=r"get_batch_size\('toy'\) returned 0"):
        load_submission(str(path), "pytorch").batch_size(toy_workload)


def test_spec_has_algoperf_v06_names_and_workloads_describe_parameters_as_shape_tuples(toy_workload):
    for name in ("ParameterTypeTree", "ParameterShapeTree", "ParameterKey", "Shape", "ShapeTuple", "ModelInitState",
                 "Timing", "Steps", "InitOptimizerFn", "UpdateParamsFn", "PrepareForEvalFn", "DataSelectionFn",
                 "UpdateReturn", "OptimizerState", "ParameterContainer", "ModelAuxiliaryState", "RandomState",
                 "Hyperparameters", "Tensor", "LossType", "ForwardPassMode", "ParameterType", "TrainingCompleteError"):
        assert hasattr(spec, name), name
    model, _ = toy_workload.init_model_fn(0)
    assert toy_workload.param_shapes == {"head.weight": spec.ShapeTuple((3, 4)), "head.bias": spec.ShapeTuple((3,))}
    assert toy_workload.param_shapes["head.weight"].shape_tuple == tuple(model.head.weight.shape)


def test_output_activation_follows_the_loss_type(toy_workload):
    import torch

    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert torch.allclose(toy_workload.output_activation_fn(logits, "pytorch"), torch.softmax(logits, -1))
    toy_workload.loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY
    assert torch.allclose(toy_workload.output_activation_fn(logits, "pytorch"), torch.sigmoid(logits))
    toy_workload.loss_type = spec.LossType.MEAN_ABSOLUTE_ERROR
    assert toy_workload.output_activation_fn(logits, "pytorch") is logits
    with pytest.raises(ValueError, match="not a jax one"):
        toy_workload.output_activation_fn(logits, "jax")


def test_pytorch_setup_answers_for_this_process(monkeypatch):
    import torch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert torch_process.pytorch_setup() == (False, 0, torch_process.default_device(), torch.cuda.device_count())
    monkeypatch.setenv("LOCAL_RANK", "0")
    use_ddp, rank, device, _ = torch_process.pytorch_setup()
    assert use_ddp and rank == 0 and device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_metrics_logger_keeps_scalars_by_step():
    import torch

    logger = MetricsLogger()
    logger.append_scalar_metrics({"loss": torch.tensor(0.5), "grad_norm": 2, "nan": float("nan")}, 3)
    with pytest.raises(TypeError, match="metric 'bad' is a list"):
        logger.append_scalar_metrics({"bad": [1, 2]}, 4)
    assert logger.take() == [{"global_step": 3, "loss": 0.5, "grad_norm": 2.0, "nan": "nan"}] and logger.take() == []


def test_fashion_mnist_reports_its_training_pixel_statistics():
    workload = load_workload("fashion_mnist", "pytorch", DATA_DIR)
    # Fashion-MNIST's well-known training-set pixel statistics (0-1 scale): mean 0.2860, std 0.3530.
    assert workload.train_mean == pytest.approx(0.2860, abs=5e-4)
    assert workload.train_stddev == pytest.approx(0.3530, abs=5e-4)
    with pytest.raises(NotImplementedError, match="adult_ctr has no train_mean"):
        load_workload("adult_ctr", "pytorch", DATA_DIR).train_mean
