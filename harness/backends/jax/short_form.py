"""The standard AlgoPerf submission functions around a short-form JAX submission.

A short-form submission defines only

    make_optimizer(params, hyperparameters, workload) -> optax.GradientTransformation

and the harness supplies `init_optimizer_state` and `update_params`. One step is one compiled
(`jax.jit`) function: forward in training mode (BatchNorm statistics updated, dropout keyed by the
step's rng) -> mean loss with the point's `label_smoothing` -> gradient -> optional `grad_clip` by
global norm -> the transformation's update -> new parameters. Hyperparameters `dropout_rate`,
`label_smoothing` and `grad_clip` are honoured when the point has them; under the self-tuning
ruleset a module-level `SELF_TUNING_DEFAULTS` stands in for the point. The step's loss stays on the
device; the workload hands it to the trial loop (`record_train_loss`).
"""

from __future__ import annotations

from typing import Callable

import jax
import optax

from harness import spec
from harness.backends.jax.workload import rng_key


def standard_functions(make_optimizer: Callable, self_tuning_defaults: spec.Hyperparameters = None) -> dict:
    """`init_optimizer_state` and `update_params` for a short-form submission."""
    compiled: dict[str, Callable] = {}  # the trial's jitted step, built by init_optimizer_state

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        del model_state, rng
        hyperparameters = self_tuning_defaults if hyperparameters is None else hyperparameters
        transformation = make_optimizer(model_params, hyperparameters, workload)
        if not isinstance(transformation, optax.GradientTransformation):
            raise TypeError("make_optimizer must return an optax.GradientTransformation, "
                            f"got {type(transformation).__name__}")
        compiled["step"] = jax.jit(train_step(workload, transformation, hyperparameters))
        return {"optax": jax.device_put(transformation.init(model_params), workload.placement)}

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        del current_params_types, hyperparameters, loss_type, eval_results, global_step, train_state
        params, model_state, optax_state, summed, count = compiled["step"](
            current_param_container, model_state, optimizer_state["optax"], batch, rng_key(rng))
        workload.record_train_loss(summed, count)
        return {"optax": optax_state}, params, model_state

    return {"init_optimizer_state": init_optimizer_state, "update_params": update_params}


def train_step(workload, transformation: optax.GradientTransformation, hyperparameters) -> Callable:
    dropout_rate = getattr(hyperparameters, "dropout_rate", None)
    label_smoothing = getattr(hyperparameters, "label_smoothing", 0.0)
    grad_clip = getattr(hyperparameters, "grad_clip", None)

    def step(params, model_state, optax_state, batch, key):
        def mean_loss(params):
            logits, new_model_state = workload.model_fn(params, batch, model_state, spec.ForwardPassMode.TRAIN, key,
                                                        update_batch_norm=True, dropout_rate=dropout_rate)
            loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"), label_smoothing=label_smoothing)
            return loss["summed"] / loss["n_valid_examples"], (new_model_state, loss["summed"], loss["n_valid_examples"])

        (_, (new_model_state, summed, count)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        if grad_clip is not None:
            grads, _ = optax.clip_by_global_norm(grad_clip).update(grads, optax.EmptyState())
        updates, optax_state = transformation.update(grads, optax_state, params)
        return optax.apply_updates(params, updates), new_model_state, optax_state, summed, count

    return step
