"""Lion (Chen et al., 2023) with fixed hyperparameters, in the style of an AlgoPerf v0.6 self-tuning
PyTorch submission: the hyperparameters namedtuple is kept in the optimizer state."""

from __future__ import annotations

import collections
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP = pytorch_setup()[0]

HPARAMS = {'learning_rate': 3e-4, 'one_minus_beta1': 0.1, 'beta2': 0.99, 'weight_decay': 0.1,
           'warmup_factor': 0.01}
HPARAMS = collections.namedtuple('Hyperparameters', HPARAMS.keys())(**HPARAMS)


class SignMomentum(torch.optim.Optimizer):
  """Lion: p -= lr * (sign(beta1 m + (1 - beta1) g) + wd p); m = beta2 m + (1 - beta2) g."""

  def __init__(self, params, lr, betas, weight_decay):
    super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

  @torch.no_grad()
  def step(self, closure=None):
    for group in self.param_groups:
      beta1, beta2 = group['betas']
      for p in group['params']:
        if p.grad is None:
          continue
        m = self.state[p].setdefault('exp_avg', torch.zeros_like(p))
        p.mul_(1 - group['lr'] * group['weight_decay'])
        p.add_((m * beta1 + p.grad * (1 - beta1)).sign_(), alpha=-group['lr'])
        m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def init_optimizer_state(workload: spec.Workload,
                         model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState,
                         hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
  del model_state, rng
  if hyperparameters is not None:
    raise RuntimeError('a self-tuning submission gets no hyperparameters')
  optimizer = SignMomentum(model_params.parameters(), lr=HPARAMS.learning_rate,
                           betas=(1.0 - HPARAMS.one_minus_beta1, HPARAMS.beta2),
                           weight_decay=HPARAMS.weight_decay)
  warmup_steps = max(1, int(HPARAMS.warmup_factor * workload.step_hint))
  scheduler = SequentialLR(optimizer, schedulers=[
      LinearLR(optimizer, start_factor=1e-10, end_factor=1.0, total_iters=warmup_steps),
      CosineAnnealingLR(optimizer, T_max=max(workload.step_hint - warmup_steps, 1))],
      milestones=[warmup_steps])
  return {'optimizer': optimizer, 'scheduler': scheduler, 'hyperparameters': HPARAMS}


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
  """Return (updated_optimizer_state, updated_params, updated_model_state)."""
  del current_params_types, loss_type, train_state, eval_results, hyperparameters
  hyperparameters = optimizer_state['hyperparameters']
  model = current_param_container
  model.train()
  optimizer_state['optimizer'].zero_grad()
  logits_batch, new_model_state = workload.model_fn(
      params=model,
      augmented_and_preprocessed_input_batch=batch,
      model_state=model_state,
      mode=spec.ForwardPassMode.TRAIN,
      rng=rng,
      update_batch_norm=True)
  loss_dict = workload.loss_fn(label_batch=batch['targets'], logits_batch=logits_batch,
                               mask_batch=batch.get('weights'),
                               label_smoothing=getattr(hyperparameters, 'label_smoothing', 0.0))
  loss = loss_dict['summed'] / loss_dict['n_valid_examples']
  loss.backward()
  optimizer_state['optimizer'].step()
  optimizer_state['scheduler'].step()
  if workload.metrics_logger is not None:
    workload.metrics_logger.append_scalar_metrics({'loss': loss.item()}, global_step)
  return (optimizer_state, current_param_container, new_model_state)


def prepare_for_eval(workload: spec.Workload,
                     current_param_container: spec.ParameterContainer,
                     current_params_types: spec.ParameterTypeTree,
                     model_state: spec.ModelAuxiliaryState,
                     hyperparameters: spec.Hyperparameters,
                     loss_type: spec.LossType,
                     optimizer_state: spec.OptimizerState,
                     eval_results: List[Tuple[int, float]],
                     global_step: int,
                     rng: spec.RandomState) -> spec.UpdateReturn:
  del workload, hyperparameters, current_params_types, loss_type, eval_results, global_step, rng
  return (optimizer_state, current_param_container, model_state)


def get_batch_size(workload_name):
  if hasattr(HPARAMS, 'batch_size'):
    return HPARAMS.batch_size
  if workload_name == 'imagenet_resnet':
    return 1024
  elif workload_name == 'finewebedu_lm':
    return 64
  else:
    raise ValueError(f'Unsupported workload name: {workload_name}.')


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
