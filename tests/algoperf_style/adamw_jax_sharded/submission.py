"""AdamW with linear warmup and cosine decay, in the style of an AlgoPerf v0.6 JAX submission: one
`jax.jit` step with explicit shardings from `algoperf.jax_sharding_utils`, the workload and the
optax update function as static arguments, the optimizer state a (state, update function) pair,
the optimizer initialised from `workload.param_shapes`, and the step's key split in the step."""

from typing import Any, Dict, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from algoperf import jax_sharding_utils, spec


def _schedule(workload, hyperparameters):
  warmup = max(1, int(hyperparameters.warmup_factor * workload.step_hint))
  return optax.warmup_cosine_decay_schedule(
    0.0, hyperparameters.learning_rate, warmup, max(workload.step_hint, warmup + 1))


def init_optimizer_state(workload: spec.Workload,
                         model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState,
                         hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
  del model_params, model_state
  jax.random.split(rng)  # a PRNG key, as AlgoPerf gives
  transformation = optax.adamw(_schedule(workload, hyperparameters),
                               b1=1.0 - hyperparameters.one_minus_beta1, b2=hyperparameters.beta2,
                               weight_decay=hyperparameters.weight_decay)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape_tuple), workload.param_shapes)
  return jax_sharding_utils.replicate(transformation.init(zeros)), transformation.update


def _train_step(workload, update_fn, model_state, opt_state, params, batch, rng):
  dropout_rng, _ = jax.random.split(rng)

  def loss_of(p):
    logits, new_state = workload.model_fn(p, batch, model_state, spec.ForwardPassMode.TRAIN, dropout_rng,
                                          update_batch_norm=True)
    losses = workload.loss_fn(batch['targets'], logits, batch.get('weights'))
    return losses['summed'] / losses['n_valid_examples'], new_state

  (loss, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
  updates, opt_state = update_fn(grads, opt_state, params)
  return opt_state, optax.apply_updates(params, updates), new_state, loss


def update_params(workload: spec.Workload,
                  current_param_container: spec.ParameterContainer,
                  current_params_types: spec.ParameterTypeTree,
                  model_state: spec.ModelAuxiliaryState,
                  hyperparameters: spec.Hyperparameters,
                  batch: Dict[str, spec.Tensor],
                  loss_type: spec.LossType,
                  optimizer_state: spec.OptimizerState,
                  eval_results: List[Tuple[int, float]],
                  global_step: int,
                  rng: spec.RandomState,
                  train_state: Optional[Dict[str, Any]] = None) -> spec.UpdateReturn:
  del current_params_types, hyperparameters, loss_type, eval_results, global_step, train_state
  opt_state, update_fn = optimizer_state
  replicated = jax_sharding_utils.get_replicate_sharding()
  split = jax_sharding_utils.get_batch_dim_sharding()
  step = jax.jit(_train_step, static_argnums=(0, 1), donate_argnums=(2, 3, 4),
                 in_shardings=(replicated, replicated, replicated, split, replicated),
                 out_shardings=(replicated, replicated, replicated, replicated))
  opt_state, params, model_state, _ = step(workload, update_fn, model_state, opt_state, current_param_container,
                                           batch, rng)
  return (opt_state, update_fn), params, model_state


def get_batch_size(workload_name):
  batch_sizes = {'fastmri': 32, 'criteo1tb': 262_144}
  return batch_sizes[workload_name]


def data_selection(workload: spec.Workload,
                   input_queue: Iterator[Dict[str, spec.Tensor]],
                   optimizer_state: spec.OptimizerState,
                   current_param_container: spec.ParameterContainer,
                   model_state: spec.ModelAuxiliaryState,
                   hyperparameters: spec.Hyperparameters,
                   global_step: int,
                   rng: spec.RandomState) -> Dict[str, spec.Tensor]:
  del workload, optimizer_state, current_param_container, model_state, hyperparameters, global_step, rng
  return next(input_queue)
