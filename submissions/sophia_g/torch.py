"""Sophia-G (Liu et al., 2023, arXiv:2305.14342): a clipped diagonal-Newton update whose curvature
is a Gauss-Newton-Bartlett estimate, refreshed every k = 10 steps.

    python submit.py --workload kjv_lm --submission sophia_g

One step: forward in train mode; on refresh steps (t = 1, k+1, 2k+1, ... as in Algorithm 3) the
labels ŷ are sampled from the model's own predictive distribution (softmax, Bernoulli, Laplace: see
`harness.backends.torch.curvature.sampled_labels`) and the gradient ĝ of the mean sampled-label loss
is taken from the same forward pass (a second backward), giving ĥ = B · ĝ ⊙ ĝ with B the number of
examples (tokens for a sequence model) the loss averages over — the official code's `bs` scaling,
moved from the denominator into the estimate. Then the real loss is backpropagated and
`harness.backends.torch.curvature.Sophia` steps. The Hessian is estimated at θ_t on the step's batch, as in the
paper's Algorithm 3. Documented choice: the official training script refreshes after the step, at
θ_{t+1} on a batch of its own (Liuhong99/Sophia train_sophiag.py lines 289 and 406-421: on steps with
iter_num mod 10 = 9, one more forward on the next batch), so its first refresh comes after ten steps
with h = 0; here the first comes before the first step and costs no extra forward pass.
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.curvature import (
    average_gradients, mean_loss, sampled_labels, sophia_optimizer_state, training_logits,
)
from submissions.sophia_g.common import EPSILON, HESSIAN_INTERVAL, SELF_TUNING_DEFAULTS


def init_optimizer_state(
    workload: spec.Workload, model_params: torch.nn.Module, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, rng: spec.RandomState,
) -> dict:
    del model_state, rng
    return sophia_optimizer_state(workload, model_params, hyperparameters or SELF_TUNING_DEFAULTS, EPSILON)


def update_params(
    workload: spec.Workload, current_param_container: torch.nn.Module, current_params_types,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters, batch: dict[str, torch.Tensor],
    loss_type: spec.LossType, optimizer_state: dict, eval_results: list, global_step: int, rng: spec.RandomState,
    train_state: dict | None = None,
) -> spec.UpdateReturn:
    """One Sophia-G step; on every k-th step also refresh h from sampled labels (see the module docstring)."""
    del current_params_types, loss_type, eval_results, train_state
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    model, optimizer = current_param_container, optimizer_state["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    logits, new_model_state = training_logits(workload, model, model_state, batch, hp, rng)
    if global_step % HESSIAN_INTERVAL == 0:
        sampled_loss, n_valid = mean_loss(workload, logits, sampled_labels(workload, logits), batch)
        sampled_loss.backward(retain_graph=True)
        average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, max_norm=hp.grad_clip)  # as the official script does
        batch_size = float(n_valid)
        optimizer.update_hessian([batch_size * p.grad * p.grad for p in params])
        optimizer.zero_grad(set_to_none=True)
    loss, _ = mean_loss(workload, logits, batch["targets"], batch, hp.label_smoothing)
    loss.backward()
    average_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, max_norm=hp.grad_clip)
    optimizer.step()
    optimizer_state["scheduler"].step()
    return optimizer_state, model, new_model_state
