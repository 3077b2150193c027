"""Adam steps with latest-weight averaging over a queue of snapshots, in the style of an AlgoPerf
v0.5 PyTorch submission: `data_selection` hands over the input queue itself and each
`update_params` call takes `inner_steps` batches from it."""

from collections import deque
from typing import Dict, Iterator, List, Tuple

import torch

from algorithmic_efficiency import spec
from algorithmic_efficiency.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP = pytorch_setup()[0]


class SnapshotAverage:
  """Keeps the last `length` parameter snapshots; `average()` is their mean."""

  def __init__(self, length):
    self.queue = deque(maxlen=length)
    self.steps = torch.tensor(0.)

  def push(self, params):
    self.queue.append([p.detach().clone() for p in params])

  def full(self):
    return len(self.queue) == self.queue.maxlen

  def average(self):
    return [torch.stack(tensors).mean(0) for tensors in zip(*self.queue)]

  def state_dict(self):
    return dict(self.__dict__)

  def load_state_dict(self, state):
    self.__dict__.update(state)


def init_optimizer_state(workload: spec.Workload,
                         model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState,
                         hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
  del workload, model_state, rng
  return {
      'optimizer': torch.optim.Adam(model_params.parameters(), lr=hyperparameters.learning_rate,
                                    betas=(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2),
                                    weight_decay=hyperparameters.weight_decay),
      'average': SnapshotAverage(int(hyperparameters.queue_length)),
      'last_weights': None,
  }


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
                  rng: spec.RandomState) -> spec.UpdateReturn:
  """Return (updated_optimizer_state, updated_params, updated_model_state)."""
  del current_params_types, loss_type, eval_results, global_step
  model = current_param_container
  average = optimizer_state['average']
  if optimizer_state['last_weights'] is not None:  # train on from the weights, not their average
    with torch.no_grad():
      for p, w in zip(model.parameters(), optimizer_state['last_weights']):
        p.copy_(w)
  new_model_state = model_state
  for _ in range(int(hyperparameters.inner_steps)):
    model.train()
    optimizer_state['optimizer'].zero_grad()
    batch_i = next(batch)
    logits_batch, new_model_state = workload.model_fn(
        params=model,
        augmented_and_preprocessed_input_batch=batch_i,
        model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN,
        rng=rng,
        update_batch_norm=True)
    loss_dict = workload.loss_fn(label_batch=batch_i['targets'], logits_batch=logits_batch,
                                 mask_batch=batch_i.get('weights'))
    (loss_dict['summed'] / loss_dict['n_valid_examples']).backward()
    optimizer_state['optimizer'].step()
    average.steps.add_(1)
  average.push(model.parameters())
  optimizer_state['last_weights'] = [p.detach().clone() for p in model.parameters()]
  if average.full():
    with torch.no_grad():
      for p, mean in zip(model.parameters(), average.average()):
        p.copy_(mean)
  return (optimizer_state, model, new_model_state)


def get_batch_size(workload_name):
  sizes = {'criteo1tb': 262_144, 'fastmri': 32, 'imagenet_resnet': 1024, 'ogbg': 512, 'wmt': 128}
  return sizes[workload_name]


def data_selection(workload: spec.Workload,
                   input_queue: Iterator[Dict[str, spec.Tensor]],
                   optimizer_state: spec.OptimizerState,
                   current_param_container: spec.ParameterContainer,
                   model_state: spec.ModelAuxiliaryState,
                   hyperparameters: spec.Hyperparameters,
                   global_step: int,
                   rng: spec.RandomState) -> Dict[str, spec.Tensor]:
  del workload, optimizer_state, current_param_container, model_state, hyperparameters, global_step, rng
  return input_queue  # update_params draws its own batches
