"""AdamW with linear warmup and cosine decay, in the style of an AlgoPerf v0.6 PyTorch submission."""

import math
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed.nn as dist_nn

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()

TRAIN_STATE_KEYS = {
  'validation_goal_reached', 'test_goal_reached', 'is_time_remaining', 'last_eval_time',
  'training_complete', 'accumulated_submission_time', 'accumulated_eval_time',
  'accumulated_logging_time', 'last_step_end_time',
}


class WarmupCosine:
  """lr(t) = peak * t / warmup during warmup, then peak * (1 + cos(pi * progress)) / 2."""

  def __init__(self, optimizer, peak, warmup_steps, total_steps):
    self.optimizer, self.peak = optimizer, peak
    self.warmup_steps, self.total_steps = max(warmup_steps, 1), total_steps
    self.t = 0

  def step(self):
    self.t += 1
    if self.t <= self.warmup_steps:
      lr = self.peak * self.t / self.warmup_steps
    else:
      progress = min(1.0, (self.t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
      lr = self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    for group in self.optimizer.param_groups:
      group['lr'] = lr

  def state_dict(self):
    return {'t': self.t}

  def load_state_dict(self, state):
    self.t = state['t']


class HandAdamW(torch.optim.Optimizer):
  """Adam moments with bias correction and decoupled weight decay, one tensor at a time."""

  def __init__(self, params, lr, betas, eps=1e-8, weight_decay=0.0):
    super().__init__(params, {'lr': lr, 'betas': betas, 'eps': eps, 'weight_decay': weight_decay})

  @torch.no_grad()
  def step(self, closure=None):
    for group in self.param_groups:
      beta1, beta2 = group['betas']
      for p in group['params']:
        if p.grad is None:
          continue
        state = self.state[p]
        if not state:
          state['step'] = torch.tensor(0.0)
          state['m'] = torch.zeros_like(p)
          state['v'] = torch.zeros_like(p)
        state['step'] += 1
        t = state['step'].item()
        state['m'].mul_(beta1).add_(p.grad, alpha=1 - beta1)
        state['v'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        p.mul_(1 - group['lr'] * group['weight_decay'])
        denom = (state['v'] / (1 - beta2 ** t)).sqrt_().add_(group['eps'])
        p.addcdiv_(state['m'], denom, value=-group['lr'] / (1 - beta1 ** t))


def init_optimizer_state(workload: spec.Workload,
                         model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState,
                         hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
  del model_state, rng
  if next(model_params.parameters()).device != DEVICE:
    raise RuntimeError(f'pytorch_setup() said {DEVICE}, the model is elsewhere')
  shapes: spec.ParameterShapeTree = workload.param_shapes
  n_params = sum(math.prod(s.shape_tuple) for s in shapes.values())
  if n_params != sum(p.numel() for p in model_params.parameters()):
    raise RuntimeError('param_shapes does not describe the model')
  optimizer = HandAdamW(model_params.parameters(), lr=hyperparameters.learning_rate,
                        betas=(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2),
                        weight_decay=hyperparameters.weight_decay)
  warmup = int(hyperparameters.warmup_factor * workload.step_hint)
  return {'optimizer': optimizer,
          'scheduler': WarmupCosine(optimizer, hyperparameters.learning_rate, warmup, workload.step_hint),
          'n_params': n_params}


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
  del loss_type, eval_results
  if train_state is None or set(train_state) != TRAIN_STATE_KEYS:
    raise RuntimeError(f'expected AlgoPerf train_state, got {train_state!r}')
  if set(current_params_types) != set(workload.param_shapes):
    raise RuntimeError('parameter types and shapes name different parameters')
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
  loss_dict = workload.loss_fn(
      label_batch=batch['targets'],
      logits_batch=logits_batch,
      mask_batch=batch.get('weights'),
      label_smoothing=hyperparameters.label_smoothing)
  summed_loss, n_valid_examples = loss_dict['summed'], loss_dict['n_valid_examples']
  if USE_PYTORCH_DDP:
    summed_loss = dist_nn.all_reduce(summed_loss)
    n_valid_examples = dist_nn.all_reduce(n_valid_examples)
  loss = summed_loss / n_valid_examples
  loss.backward()
  optimizer_state['optimizer'].step()
  optimizer_state['scheduler'].step()
  if workload.metrics_logger is not None and global_step % 5 == 0:
    workload.metrics_logger.append_scalar_metrics(
        {'loss': loss.item(), 'lr': optimizer_state['optimizer'].param_groups[0]['lr']}, global_step)
  return (optimizer_state, current_param_container, new_model_state)


def get_batch_size(workload_name):
  if workload_name == 'imagenet_resnet':
    return 1024
  elif workload_name == 'criteo1tb':
    return 262_144
  elif workload_name == 'wmt':
    return 128
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
