"""Diagonal curvature estimates and the optimizers built on them, in JAX, for the full-API submissions
`sophia_g`, `sophia_h` and `adahessian` (the torch counterpart is `harness/backends/torch/curvature.py`).

Estimators, for a loss L(θ) with gradient g on a mini-batch of B examples (tokens for a sequence model):

    Hutchinson (Hutchinson, 1990):   ĥ = u ⊙ (∇²L u),  u ~ N(0, I) or Rademacher
    Gauss-Newton-Bartlett (Liu et al., 2023, Algorithm 2):
                                     ŷ ~ p(y | f(θ, x)),  ĝ = ∇ (1/B) Σ ℓ(f(θ, x), ŷ),  ĥ = B · ĝ ⊙ ĝ

∇²L u is taken forward-over-reverse (`jax.jvp` of `jax.grad`), which gives g and ∇²L u in one pass.
Every random draw comes from the step's key through `random_directions` or `sampled_labels` (the
twin tests replace these two to give JAX and torch the same draws). `jitted_full_api` turns a
submission's step into AlgoPerf's `init_optimizer_state` and `update_params`, the step compiled once
per trial.
"""

from __future__ import annotations

from typing import Callable, Hashable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from harness.backends.jax.workload import rng_key

SAMPLERS = {"gaussian": jax.random.normal, "rademacher": jax.random.rademacher}

# build_step(workload, hyperparameters) -> (init, step), where init(params) is the optimizer state (a
# pytree of arrays) and step(params, model_state, optimizer_state, batch, key, variant) returns
# (params, model_state, optimizer_state, summed training loss, its example count).
BuildStep = Callable[[spec.Workload, spec.Hyperparameters], tuple[Callable, Callable]]


def jitted_full_api(build_step: BuildStep, self_tuning_defaults: spec.Hyperparameters,
                    variant: Callable[[int], Hashable] = lambda global_step: None) -> tuple[Callable, Callable]:
    """AlgoPerf's `init_optimizer_state` and `update_params` around a submission's step.

    `init_optimizer_state` builds the step for the trial's workload and point (`self_tuning_defaults`
    under the self-tuning ruleset) and compiles it (`jax.jit`), keeping it out of the checkpointed
    optimizer state. `update_params` runs the compiled step with the step's key and hands the training
    loss to the loop (`record_train_loss`), with no host sync. `variant(global_step)` (e.g. whether
    the step refreshes a curvature estimate) reaches the step as its static last argument, one executable
    per value: not a `jax.lax.cond`, whose branches XLA:CPU ran about 15 times slower when they hold a
    convolution's gradient (sophia_h on fashion_mnist: 6.8 s a step against 0.45 s).
    """
    compiled: dict[str, Callable] = {}  # the trial's jitted step

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        del model_state, rng
        init, step = build_step(workload, self_tuning_defaults if hyperparameters is None else hyperparameters)
        compiled["step"] = jax.jit(step, static_argnums=5)
        return jax.device_put(init(model_params), workload.placement)

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        del current_params_types, hyperparameters, loss_type, eval_results, train_state
        params, model_state, optimizer_state, summed, count = compiled["step"](
            current_param_container, model_state, optimizer_state, batch, rng_key(rng), variant(global_step))
        workload.record_train_loss(summed, count)
        return optimizer_state, params, model_state

    return init_optimizer_state, update_params


# ----- forward passes and losses -----

def training_logits(workload: spec.Workload, params, model_state, batch: dict, hyperparameters, key):
    """(logits, new model state): train mode (BatchNorm statistics updated) with the point's
    `dropout_rate`, as the short form's forward pass."""
    return workload.model_fn(params, batch, model_state, spec.ForwardPassMode.TRAIN, key, update_batch_norm=True,
                             dropout_rate=getattr(hyperparameters, "dropout_rate", None))


def mean_loss(workload: spec.Workload, logits, labels, batch: dict, label_smoothing: float = 0.0):
    """(mean loss, (summed loss, number of valid examples)) of `workload.loss_fn`."""
    loss = workload.loss_fn(labels, logits, batch.get("weights"), label_smoothing=label_smoothing)
    return loss["summed"] / loss["n_valid_examples"], (loss["summed"], loss["n_valid_examples"])


def training_loss(workload: spec.Workload, model_state, batch: dict, hyperparameters, key) -> Callable:
    """θ ↦ (mean training loss with the point's `label_smoothing`, (new model state, summed, count))."""

    def loss(params):
        logits, new_model_state = training_logits(workload, params, model_state, batch, hyperparameters, key)
        mean, (summed, count) = mean_loss(workload, logits, batch["targets"], batch,
                                          getattr(hyperparameters, "label_smoothing", 0.0))
        return mean, (new_model_state, summed, count)

    return loss


def clipped(grads, max_norm: float):
    """`grads` scaled to global norm `max_norm` when larger (optax's `clip_by_global_norm`)."""
    return optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())[0]


# ----- random draws -----

def random_directions(key: jax.Array, params, distribution: str):
    """One direction per parameter, shaped and typed like it: N(0, I) for "gaussian", uniform on
    {−1, 1} for "rademacher" (independent keys per leaf, `optax.tree.random_like`)."""
    if distribution not in SAMPLERS:
        raise ValueError(f"unknown probe distribution {distribution!r}; choose one of {tuple(SAMPLERS)}")
    return optax.tree.random_like(key, params, SAMPLERS[distribution])


def sampled_labels(workload: spec.Workload, logits, key: jax.Array):
    """Labels drawn from the model's own predictive distribution, whose negative log-likelihood is the
    workload's loss: the Gauss-Newton-Bartlett estimator's labels (Liu et al., 2023, §2.3).

    softmax cross-entropy: ŷ ~ Categorical(softmax(z)); sigmoid cross-entropy: ŷ ~ Bernoulli(σ(z)) per
    label; mean absolute error (the Laplace log-likelihood with scale 1): ŷ = z + Laplace(0, 1) noise.
    A workload whose labels have a form of their own samples them through `workload.sample_labels(logits, key)`.
    """
    if hasattr(workload, "sample_labels"):
        return workload.sample_labels(logits, key)
    logits = jax.lax.stop_gradient(logits)
    if workload.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY:
        return jax.random.categorical(key, logits, axis=-1)
    if workload.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)
    if workload.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR:
        return logits + jax.random.laplace(key, logits.shape, logits.dtype)
    raise ValueError(
        f"the Gauss-Newton-Bartlett estimator needs labels sampled from the model; workload {workload.name} has "
        f"loss {workload.loss_type.name}, which has no sampler here: use the Hutchinson estimator (sophia_h)"
    )


# ----- Hessian-vector products -----

def gradient_and_hessian_product(loss: Callable, params, vector):
    """(∇L, ∇²L v, aux) for `loss(params) -> (L, aux)`: one forward-over-reverse pass."""
    return jax.jvp(jax.grad(loss, has_aux=True), (params,), (vector,), has_aux=True)


def hutchinson_diagonal(loss: Callable, params, key: jax.Array, distribution: str):
    """(g, z ⊙ (∇²L z), aux) with one probe z from `random_directions`."""
    probes = random_directions(key, params, distribution)
    grads, hessian_probes, aux = gradient_and_hessian_product(loss, params, probes)
    return grads, jax.tree_util.tree_map(jnp.multiply, probes, hessian_probes), aux


def spatially_averaged(values):
    """AdaHessian's spatial averaging (Yao et al., 2021; official `get_trace`) in Flax's layouts: |v| for
    arrays of up to two dimensions; for convolution kernels (k_h, k_w, in, out) |v| averaged over the
    k_h x k_w positions and broadcast back over them; likewise over the k positions of (k, in, out)."""

    def average(v):
        if v.ndim > 4:
            raise ValueError(f"no spatial averaging rule for a {v.ndim}-D parameter of shape {v.shape}")
        positions = tuple(range(v.ndim - 2))
        return jnp.broadcast_to(jnp.abs(v).mean(axis=positions, keepdims=True), v.shape) if positions else jnp.abs(v)

    return jax.tree_util.tree_map(average, values)


# ----- Sophia -----

class ScaleBySophiaState(NamedTuple):
    mu: optax.Updates  # m
    hessian: optax.Updates  # h


def scale_by_sophia(b1: float, b2: float, rho: float, eps: float) -> optax.GradientTransformationExtraArgs:
    r"""Sophia's clipped step (Liu et al., 2023, Algorithm 3), in the official code's parameterisation:

        h ← β₂ h + (1 − β₂) ĥ           only when `update(..., curvature=ĥ)` is given an estimate
        m ← β₁ m + (1 − β₁) g
        u = clip(m / max(ρ h, ε), 1)     clip(x, 1) = max(min(x, 1), −1) element-wise

    h starts at 0. Not the scaling of `optax.contrib.sophia` (optax 0.2.8), which divides m by 1 − β₁ᵗ
    and refreshes h after the step that uses it (its first step is sign(g), with h = 0), neither of
    which Algorithm 3 or the torch twin does.
    """
    if rho <= 0 or eps <= 0 or not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"invalid Sophia hyperparameters: b1={b1}, b2={b2}, rho={rho} (> 0), eps={eps} (> 0)")

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return ScaleBySophiaState(zeros, zeros)

    def update(grads, state, params=None, curvature=None, **extra_args):
        del params, extra_args
        hessian = state.hessian if curvature is None else jax.tree_util.tree_map(
            lambda h, e: h + (1 - b2) * (e - h), state.hessian, curvature)
        mu = jax.tree_util.tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        updates = jax.tree_util.tree_map(lambda m, h: jnp.clip(m / jnp.maximum(rho * h, eps), -1.0, 1.0), mu, hessian)
        return updates, ScaleBySophiaState(mu, hessian)

    return optax.GradientTransformationExtraArgs(init, update)


def sophia(workload: spec.Workload, hyperparameters, eps: float) -> optax.GradientTransformationExtraArgs:
    """θ ← θ − η_t (u + λ θ) with `scale_by_sophia`'s u, from the point's hyperparameters and the
    baselines' warmup-cosine schedule η_t: the torch twin's `Sophia` and scheduler."""
    hp = hyperparameters
    return optax.chain(
        scale_by_sophia(1.0 - hp.one_minus_beta1, hp.beta2, hp.rho, eps),
        optax.add_decayed_weights(hp.weight_decay),
        optax.scale_by_learning_rate(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor)),
    )


# ----- AdaHessian -----

class ScaleByAdaHessianState(NamedTuple):
    count: jax.Array  # t − 1
    mu: optax.Updates  # m
    nu: optax.Updates  # v


def scale_by_adahessian(b1: float, b2: float, eps: float,
                        hessian_power: float) -> optax.GradientTransformationExtraArgs:
    r"""AdaHessian's scaling (Yao et al., 2021, Algorithm 1; amirgholami/adahessian), with D the spatially
    averaged Hutchinson estimate passed as `update(..., hessian_diagonal=D)`, step t = 1, 2, ...:

        m ← β₁ m + (1 − β₁) g,     v ← β₂ v + (1 − β₂) D ⊙ D
        u = (m / (1 − β₁ᵗ)) / ((v / (1 − β₂ᵗ))^(k/2) + ε)        with Hessian power k

    optax has no AdaHessian.
    """
    if eps < 0 or not 0.0 < hessian_power <= 1.0 or not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"invalid AdaHessian hyperparameters: b1={b1}, b2={b2}, eps={eps}, "
                         f"hessian_power={hessian_power} (must be in (0, 1])")

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return ScaleByAdaHessianState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None, hessian_diagonal=None, **extra_args):
        del params, extra_args
        if hessian_diagonal is None:
            raise ValueError("AdaHessian's update needs the Hessian-diagonal estimate: update(..., hessian_diagonal=D)")
        t = state.count + 1
        mu = jax.tree_util.tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, d: b2 * v + (1 - b2) * d * d, state.nu, hessian_diagonal)
        c1, c2 = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)
        updates = jax.tree_util.tree_map(lambda m, v: (m / c1) / ((v / c2) ** (hessian_power / 2) + eps), mu, nu)
        return updates, ScaleByAdaHessianState(t, mu, nu)

    return optax.GradientTransformationExtraArgs(init, update)


def adahessian(workload: spec.Workload, hyperparameters, eps: float) -> optax.GradientTransformationExtraArgs:
    """θ ← θ − η_t (u + λ θ) with `scale_by_adahessian`'s u (decoupled weight decay, as the official
    code) and the baselines' warmup-cosine schedule η_t: the torch twin's `AdaHessian` and scheduler."""
    hp = hyperparameters
    return optax.chain(
        scale_by_adahessian(1.0 - hp.one_minus_beta1, hp.beta2, eps, hp.hessian_power),
        optax.add_decayed_weights(hp.weight_decay),
        optax.scale_by_learning_rate(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor)),
    )
