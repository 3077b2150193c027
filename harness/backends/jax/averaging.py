"""Evaluation at other weights than the trained ones, for full-API JAX submissions built on a short-form
optax transformation: exponential moving averages (`ema`), latest weight averaging (`lawa`),
polynomial-decay averaging (`dog`) and schedule-free optimizers (`schedule_free_adamw`).

Parameters are immutable pytrees, so nothing is swapped as in torch (`harness/backends/torch/averaging.py`):
the optimizer state keeps the live (training) weights, `prepare_for_eval` returns the weights to
evaluate, and `update_params` steps from the live weights in its state, whatever parameters the loop
hands back. Evaluations therefore never change training, and a checkpoint taken at an evaluation
(evaluated weights as the parameters, live ones in the optimizer state) resumes exactly. Keeping the
live weights costs no memory: they are the arrays the step returned. One step is one compiled
function: the short form's step (`harness/backends/jax/short_form.py`) followed by the averager's
update, whose state is donated (updated in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.averaging import BN_BATCHES
from harness.backends.jax.short_form import train_step
from harness.backends.jax.workload import parameter_types, rng_key

MakeOptimizer = Callable[[Any, spec.Hyperparameters, spec.Workload], optax.GradientTransformation]


def has_batch_norm(params) -> bool:
    """Whether a Flax parameter tree has BatchNorm parameters (by their Linen names, `parameter_types`)."""
    kinds = (spec.ParameterType.BATCH_NORM_SCALE, spec.ParameterType.BATCH_NORM_BIAS)
    return any(kind in kinds for kind in jax.tree_util.tree_leaves(parameter_types(params)))


def _copy(tree):
    """New buffers holding `tree`'s values (an averager's state is donated to the step)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


class Averager(Protocol):
    """An average of the weights; its functions are traced into the trial's compiled functions."""

    def init(self, params, model_state) -> Any:
        """The averager's state (a pytree of arrays) at the initial weights."""

    def update(self, state, params, model_state, global_step: jax.Array) -> Any:
        """The state with the weights after step `global_step` (0-based) folded in."""

    def evaluated(self, state, params, model_state) -> tuple[Any, Any]:
        """(params, model_state) to evaluate, given the live ones."""


@dataclass(frozen=True)
class ExponentialMovingAverage:
    """θ̄ ← β θ̄ + (1 − β) θ after every step, from θ̄₀ = θ₀ (Polyak & Juditsky, 1992, in its EMA form).
    BatchNorm statistics are not averaged."""

    decay: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.decay}")

    def init(self, params, model_state):
        return _copy(params)

    def update(self, average, params, model_state, global_step):
        return optax.incremental_update(params, average, 1.0 - self.decay)

    def evaluated(self, average, params, model_state):
        return average, model_state


@dataclass(frozen=True)
class LatestWeightAverage:
    """LAWA (Kaddour, 2022; Sanyal et al., 2023): the mean of the latest k snapshots of θ, one taken after
    every `interval`-th step into a ring of k slots; evaluated once k exist (before, θ itself). BatchNorm
    statistics are not averaged."""

    queue_length: int
    interval: int

    def __post_init__(self) -> None:
        if self.queue_length < 1 or self.interval < 1:
            raise ValueError(f"LAWA needs queue_length >= 1 and interval >= 1, got {self.queue_length} and "
                             f"{self.interval}")

    def init(self, params, model_state):
        snapshots = jax.tree_util.tree_map(lambda p: jnp.zeros((self.queue_length, *p.shape), p.dtype), params)
        return {"snapshots": snapshots, "taken": jnp.zeros([], jnp.int32)}

    def update(self, state, params, model_state, global_step):
        def take(state):
            slot = state["taken"] % self.queue_length
            snapshots = jax.tree_util.tree_map(lambda s, p: s.at[slot].set(p), state["snapshots"], params)
            return {"snapshots": snapshots, "taken": state["taken"] + 1}

        return jax.lax.cond((global_step + 1) % self.interval == 0, take, lambda state: state, state)

    def evaluated(self, state, params, model_state):
        ready = state["taken"] >= self.queue_length
        mean = jax.tree_util.tree_map(lambda s, p: jnp.where(ready, s.mean(axis=0), p), state["snapshots"], params)
        return mean, model_state


@dataclass(frozen=True)
class PolynomialDecayAverage:
    """x̄_t = (1 − w_t) x̄_{t−1} + w_t x_t with w_t = (1 + γ)/(t + γ), t = 1, 2, ... (Shamir & Zhang, 2013),
    over the parameters and the model state (BatchNorm statistics), as `dog.PolynomialDecayAverager`."""

    gamma: float

    def init(self, params, model_state):
        return {"average": _copy({"params": params, "model_state": model_state}), "t": jnp.ones([], jnp.int32)}

    def update(self, state, params, model_state, global_step):
        weight = (1.0 + self.gamma) / (state["t"] + self.gamma)
        live = {"params": params, "model_state": model_state}
        return {"average": optax.incremental_update(live, state["average"], weight), "t": state["t"] + 1}

    def evaluated(self, state, params, model_state):
        return state["average"]["params"], state["average"]["model_state"]


MakeAverager = Callable[[Any, spec.Hyperparameters, spec.Workload], Averager]


def averaging_functions(
    make_optimizer: MakeOptimizer, make_averager: MakeAverager, self_tuning_defaults: spec.Hyperparameters
) -> dict[str, Callable]:
    """AlgoPerf's functions for a short-form transformation plus an averager evaluated in its place. The
    step is the short form's, run with `self_tuning_defaults` when the ruleset gives no hyperparameters
    (`make_optimizer` gets them as given), from the live parameters and model state kept in the
    optimizer state; `prepare_for_eval` returns the averager's weights."""
    trial: dict[str, Callable] = {}  # the trial's compiled functions, built by init_optimizer_state

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        del rng
        transformation = make_optimizer(model_params, hyperparameters, workload)
        hyperparameters = self_tuning_defaults if hyperparameters is None else hyperparameters
        averager = make_averager(model_params, hyperparameters, workload)
        step = train_step(workload, transformation, hyperparameters)

        def averaged_step(params, model_state, optax_state, average, batch, key, global_step):
            params, model_state, optax_state, summed, count = step(params, model_state, optax_state, batch, key)
            average = averager.update(average, params, model_state, global_step)
            return params, model_state, optax_state, average, summed, count

        trial["step"] = jax.jit(averaged_step, donate_argnums=3)
        trial["evaluated"] = jax.jit(averager.evaluated)
        return jax.device_put({
            "optax": transformation.init(model_params), "average": averager.init(model_params, model_state),
            "live": {"params": model_params, "model_state": model_state},
        }, workload.placement)

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        del current_param_container, current_params_types, model_state, hyperparameters, loss_type, eval_results
        del train_state
        live = optimizer_state["live"]
        params, model_state, optax_state, average, summed, count = trial["step"](
            live["params"], live["model_state"], optimizer_state["optax"], optimizer_state["average"], batch,
            rng_key(rng), global_step)
        workload.record_train_loss(summed, count)
        state = {"optax": optax_state, "average": average, "live": {"params": params, "model_state": model_state}}
        return state, params, model_state

    def prepare_for_eval(workload, current_param_container, current_params_types, model_state, hyperparameters,
                         loss_type, optimizer_state, eval_results, global_step, rng):
        live = optimizer_state["live"]
        params, model_state = trial["evaluated"](optimizer_state["average"], live["params"], live["model_state"])
        return optimizer_state, params, model_state

    return {"init_optimizer_state": init_optimizer_state, "update_params": update_params,
            "prepare_for_eval": prepare_for_eval}


def schedule_free_functions(make_optimizer: MakeOptimizer, self_tuning_defaults: spec.Hyperparameters
                            ) -> dict[str, Callable]:
    r"""AlgoPerf's functions for a `make_optimizer` that returns a schedule-free transformation (Defazio
    et al., 2024, "The Road Less Scheduled", arXiv:2405.15682) whose state has the fields `b1` and `z`
    of `optax.contrib.ScheduleFreeState`. Its parameters are y, the point gradients are taken at:

        y_t = (1 − β) z_t + β x_t,   z_{t+1} = z_t − γ_t ∇f(y_t),   x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}

    The optimizer state keeps y; `prepare_for_eval` returns x = (y − (1 − β) z)/β
    (`optax.contrib.schedule_free_eval_params`). For models with BatchNorm it then runs BN_BATCHES
    training batches forward in train mode at x to refresh the running statistics, as the schedulefree
    package's README prescribes; those batches come from the input queue, which `data_selection` keeps,
    and are not trained on. As in torch, the refreshed statistics are the model state that training
    carries on with. The step runs with `self_tuning_defaults` when the ruleset gives no hyperparameters.
    """
    trial: dict[str, Any] = {}  # the trial's compiled functions and input queue

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        del model_state, rng
        transformation = make_optimizer(model_params, hyperparameters, workload)
        hyperparameters = self_tuning_defaults if hyperparameters is None else hyperparameters
        trial["step"] = jax.jit(train_step(workload, transformation, hyperparameters))
        trial["x"] = jax.jit(optax.contrib.schedule_free_eval_params)
        trial["batch_norm"] = has_batch_norm(model_params)
        trial["refresh"] = jax.jit(lambda params, model_state, batch, key: workload.model_fn(
            params, batch, model_state, spec.ForwardPassMode.TRAIN, key, update_batch_norm=True)[1])
        return jax.device_put({"optax": transformation.init(model_params), "live": model_params}, workload.placement)

    def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                       hyperparameters, global_step, rng):
        trial["queue"] = input_queue
        return next(input_queue)

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        del current_param_container, current_params_types, hyperparameters, loss_type, eval_results, global_step
        del train_state
        params, model_state, optax_state, summed, count = trial["step"](
            optimizer_state["live"], model_state, optimizer_state["optax"], batch, rng_key(rng))
        workload.record_train_loss(summed, count)
        return {"optax": optax_state, "live": params}, params, model_state

    def prepare_for_eval(workload, current_param_container, current_params_types, model_state, hyperparameters,
                         loss_type, optimizer_state, eval_results, global_step, rng):
        x = trial["x"](optimizer_state["optax"], optimizer_state["live"])
        if trial["batch_norm"]:
            model_state = recompute_batch_norm(trial["refresh"], x, model_state, trial.get("queue"), rng, BN_BATCHES)
        return optimizer_state, x, model_state

    return {"init_optimizer_state": init_optimizer_state, "data_selection": data_selection,
            "update_params": update_params, "prepare_for_eval": prepare_for_eval}


def recompute_batch_norm(refresh: Callable, params, model_state, queue: Iterator | None, rng, num_batches: int):
    """The model state after `num_batches` forward passes in train mode at `params`, each on the queue's
    next batch: `refresh(params, model_state, batch, key)` returns the updated state."""
    if queue is None:
        raise RuntimeError("no input queue yet: prepare_for_eval ran before any data_selection call")
    for key in jax.random.split(rng_key(rng), num_batches):
        model_state = refresh(params, model_state, next(queue), key)
    return model_state
