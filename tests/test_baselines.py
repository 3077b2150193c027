"""The baseline submissions against transcriptions of their references."""

from __future__ import annotations

import math

import pytest
import torch

from harness.discovery import load_submission
from harness.backends.torch.schedules import warmup_cosine_decay, warmup_linear_decay


def nadamw_reference(params, grads_per_step, lr, beta1, beta2, eps, weight_decay):
    """AlgoPerf's PyTorch NAdamW (reference_algorithms/.../pytorch_nadamw_full_budget.py), transcribed
    from its update equations, one parameter tensor at a time."""
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = state[i]
            p.mul_(1 - lr * weight_decay)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            nesterov = beta1 * m + (1 - beta1) * g
            denominator = (v.sqrt() / math.sqrt(1 - beta2**t)) + eps
            p.sub_(lr / (1 - beta1**t) * nesterov / denominator)
            state[i] = (m, v)
    return params


def test_nadamw_matches_algoperf_update_equations_for_25_steps():
    from submissions.nadamw.torch import NAdamW as Optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    reference = [p.detach().clone() for p in model.parameters()]
    optimizer = Optimizer(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    grads_per_step = []
    for _ in range(25):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads_per_step.append([p.grad.detach().clone() for p in model.parameters()])
        optimizer.step()
    expected = nadamw_reference(reference, grads_per_step, 3e-3, 0.9, 0.98, 1e-8, 0.1)
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)


def lr_curve(make, steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = make(optimizer)
    curve = []
    for _ in range(steps):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return curve


def test_warmup_cosine_decay_follows_its_formula_and_stays_at_zero():
    curve = lr_curve(lambda o: warmup_cosine_decay(o, step_hint=100, warmup_factor=0.1), 130)
    assert curve[0] == 0 and curve[5] == pytest.approx(1.0) and curve[10] == pytest.approx(2.0)
    assert curve[55] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert curve[100:] == pytest.approx([0.0] * 30, abs=1e-12)


def test_warmup_cosine_decay_agrees_with_algoperf_torch_chain_before_step_hint():
    """AlgoPerf chains LinearLR(1e-10 -> 1) and CosineAnnealingLR; both agree up to step_hint."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    def algoperf(o):
        warmup = LinearLR(o, start_factor=1e-10, end_factor=1.0, total_iters=10)
        return SequentialLR(o, [warmup, CosineAnnealingLR(o, T_max=90)], milestones=[10])

    ours = lr_curve(lambda o: warmup_cosine_decay(o, 100, 0.1), 100)
    assert ours == pytest.approx(lr_curve(algoperf, 100), abs=1e-6)


def test_warmup_linear_decay_reaches_end_factor_and_holds():
    curve = lr_curve(lambda o: warmup_linear_decay(o, 100, 0.1, 0.9, 0.01), 120)
    assert curve[10] == pytest.approx(2.0) and curve[90] == pytest.approx(0.02)
    assert curve[50] == pytest.approx(2.0 * (1 - 0.99 * 40 / 80))
    assert curve[119] == pytest.approx(0.02)


@pytest.mark.parametrize("name", ["nadamw", "adamw", "sgd_nesterov"])
def test_baselines_train_the_toy_workload_under_both_rulesets(name, toy_workload, tmp_path):
    from support import NullProgress
    from harness import search_space
    from harness.records import TrialRecord
    from harness.trial import run_trial

    submission = load_submission(name, "pytorch")
    point = search_space.draw(search_space.load(submission.search_space_path), 1, seed=0)[0]
    for hp in (point, None):
        record = TrialRecord(tmp_path / f"{name}-{hp is None}")
        outcome = run_trial(toy_workload, submission, hp, 0, 60.0, record, NullProgress(), max_global_steps=30)
        assert outcome.status in ("reached", "stopped")
        assert all(math.isfinite(r["validation/loss"]) for r in record.eval_rows)
