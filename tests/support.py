"""Helpers shared by the test modules (import as `from support import ...`; tests/ is on pythonpath)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOY_WORKLOAD = REPO / "tests" / "toy_workload"


class FakeTime:
    """A time source that advances only when told to: `sleep` stands in for work of known length."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class NullProgress:
    def on_step(self, global_step, clock) -> None: ...

    def on_eval(self, global_step, eval_row, clock) -> None: ...


def run_submit(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python submit.py ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, str(REPO / "submit.py"), *args], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=600,
    )


def nadamw_on_one_batch(workload, batch: dict, steps: int) -> tuple:
    """Train `workload`'s fresh model (seed 0) with NAdamW's search-space point 1 for `steps` steps on
    the same batch; returns (model, model_state, loss before, loss after), the loss being the mean of
    `workload.loss_fn` over the batch (its `weights` as the mask) in evaluation mode."""
    from harness import search_space, spec
    from harness.discovery import load_submission

    submission = load_submission("nadamw", "pytorch")
    point = search_space.load(REPO / "submissions" / "nadamw" / "search_space.json")[0]
    hyperparameters = spec.make_hyperparameters(point)
    model, model_state = workload.init_model_fn(0)

    def loss() -> float:
        logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
        out = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
        return float(out["summed"]) / float(out["n_valid_examples"])

    optimizer_state = submission.init_optimizer_state(workload, model, model_state, hyperparameters, 0)
    before = loss()
    for step in range(steps):
        optimizer_state, model, model_state = submission.update_params(
            workload, model, workload.model_params_types, model_state, hyperparameters, batch,
            workload.loss_type, optimizer_state, [], step, 0)
    return model, model_state, before, loss()


def toy_variant(directory: Path, name: str, **attributes) -> Path:
    """A workload folder whose `Workload` is the toy workload with `name` and other class attributes
    (e.g. `calibration_seconds_per_step`, unreachable targets); returns the folder."""
    folder = directory / name
    folder.mkdir(parents=True)
    lines = "".join(f"    {key} = {value!r}\n" for key, value in {"name": name, **attributes}.items())
    (folder / "torch.py").write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('timetrial_toy_base', {str(TOY_WORKLOAD / 'torch.py')!r})\n"
        "_toy = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_toy)\n\n\n"
        f"class Workload(_toy.Workload):\n{lines}"
    )
    return folder


def run_report(args, capsys) -> tuple[int, str, str]:
    """`python -m scoring.report ARGS` in this process: its exit status, stdout and stderr."""
    from scoring.report import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def taken_train_loss(workload) -> float | None:
    """The mean training loss the workload hands the trial loop after a step (`take_train_loss`), on the host."""
    taken = workload.take_train_loss()
    if taken is None:
        return None
    summed, count = workload.to_host(taken)
    return float(summed) / float(count)
