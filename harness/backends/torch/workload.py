"""PyTorch side of the workload API: batches on the device, model_fn, loss_fn, sync, seeds, checkpoints.

A concrete workload's `torch.py` subclasses `TorchWorkload` together with its framework-free class
(`workload.py`: data, batches, metrics), and supplies `build_model()` and `eval_sums()`; it may
override `model_inputs()` (what the model is called with).

In a trial on several devices (one process each, `distributed.py`), the input queue yields this
process's part of every global batch, the trial wraps the model in DistributedDataParallel, and
evaluation runs the model itself on this process's part of each batch and combines the sums of all.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import evaluation, spec
from harness.backends.torch import checkpoint as torch_checkpoint
from harness.backends.torch import distributed
from harness.backends.torch.process import default_device

_PARAMETER_TYPES = (  # (module type, parameter name) -> AlgoPerf ParameterType
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "weight", spec.ParameterType.CONV_WEIGHT),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "weight", spec.ParameterType.BATCH_NORM_SCALE),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "bias", spec.ParameterType.BATCH_NORM_BIAS),
    ((nn.LayerNorm,), "weight", spec.ParameterType.LAYER_NORM_SCALE),
    ((nn.LayerNorm,), "bias", spec.ParameterType.LAYER_NORM_BIAS),
    ((nn.Embedding,), "weight", spec.ParameterType.EMBEDDING),
)


# The `algoperf_parameter_types` of an attention block with a fused query/key/value projection
# `qkv` and an output projection `out` (AlgoPerf types these ATTENTION_QKV / ATTENTION_OUT / ATTENTION_BIAS).
FUSED_ATTENTION_PARAMETER_TYPES = {
    "qkv.weight": spec.ParameterType.ATTENTION_QKV, "out.weight": spec.ParameterType.ATTENTION_OUT,
    "qkv.bias": spec.ParameterType.ATTENTION_BIAS, "out.bias": spec.ParameterType.ATTENTION_BIAS,
}


def parameter_types(model: nn.Module) -> dict[str, spec.ParameterType]:
    """AlgoPerf's parameter-type tree for a torch module, keyed by parameter name.

    Types follow the module kind (convolution, normalisation, embedding; else WEIGHT or BIAS); a
    module may name its own parameters' types in a class attribute `algoperf_parameter_types`
    (`{'qkv.weight': ParameterType.ATTENTION_QKV, ...}`, paths relative to the module), as
    attention blocks do.
    """
    types, declared = {}, {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param_name, _ in module.named_parameters(recurse=False):
            kind = spec.ParameterType.BIAS if param_name == "bias" else spec.ParameterType.WEIGHT
            for module_types, name, ptype in _PARAMETER_TYPES:
                if isinstance(module, module_types) and param_name == name:
                    kind = ptype
            types[prefix + param_name] = kind
        declared.update({prefix + path: ptype for path, ptype in getattr(module, "algoperf_parameter_types", {}).items()})
    return types | declared


def _writable(array: np.ndarray) -> np.ndarray:
    """`array` as torch.from_numpy takes it without a warning: contiguous and writable."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _map(value: Any, leaf_type: type, fn: Callable[[Any], Any]) -> Any:
    """`value` with `fn` applied to its leaves of `leaf_type`, inside dicts, lists, tuples and named tuples."""
    if isinstance(value, leaf_type):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map(item, leaf_type, fn) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map(item, leaf_type, fn) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map(item, leaf_type, fn) for item in value)
    return value


class TorchWorkload(spec.Workload):
    """The PyTorch side of a workload whose framework-free facts, data and metrics come from its
    `workload.py` class."""

    framework = "pytorch"
    output_layer_name = "head"  # the model's final layer; see `is_output_params`

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir)
        self.device = default_device()
        self._dropout_rate: float | None = None
        self._batch_norm_updates = True
        self.last_train_loss: tuple[torch.Tensor, torch.Tensor | int] | None = None

    # ----- what a concrete workload supplies -----
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the global torch seed is set by `init_model_fn`)."""

    # ----- several devices: one process each (distributed.py) -----
    def use_devices(self, num_devices: int) -> distributed.Ranks:
        """The trial loop's view of this trial's `num_devices` processes (harness.trial.Devices)."""
        return distributed.Ranks(self.device, num_devices)

    def _build_input_queue(self, data_rng, split: str, data_dir: str, global_batch_size: int):
        """The input queue of `spec.Workload`, or, in one of several processes, this process's contiguous
        part of each of the same global batches."""
        count = distributed.process_count()
        if count == 1:
            return super()._build_input_queue(data_rng, split, data_dir, global_batch_size)
        indices, rank = self.train_batch_indices(data_rng, split, global_batch_size), distributed.rank()
        return (self.to_device(self.host_batch(split, distributed.train_part(index, rank, count))) for index in indices)

    def _eval_model_on_split(self, split, num_examples, global_batch_size, params, model_state, rng, data_dir,
                             global_step=0):
        """`spec.Workload`'s evaluation of the model itself (not its DDP wrapper); in one of several
        processes, over this process's part of each batch, the sums of every process combined."""
        model = distributed.unwrapped(params)
        if distributed.process_count() == 1:
            return super()._eval_model_on_split(split, num_examples, global_batch_size, model, model_state, rng,
                                                data_dir, global_step)
        parts = self._eval_parts(split, num_examples, global_batch_size)
        with self.evaluation_mode():
            part_sums = [self.eval_batch_sums(split, model, model_state, rng, batch) for batch, _ in parts]
        part_sums, real = self.to_host(part_sums), [is_real for _, is_real in parts]
        sums = evaluation.BatchSums()
        for batch_sums in distributed.combine_eval_sums(distributed.gather(part_sums), distributed.gather(real)):
            sums.add(batch_sums)
        return self.metrics_from_sums(sums.result(lambda host: host))

    def _eval_parts(self, split: str, num_examples: int, batch_size: int) -> list[tuple[dict, bool]]:
        """This process's part of each evaluation batch on the device, and whether it is real
        (`distributed.eval_part`), assembled at the first evaluation and kept."""
        key = ("part", split, num_examples, batch_size)
        if key not in self._eval_batch_cache:
            rank, count = distributed.rank(), distributed.process_count()
            parts = [distributed.eval_part(index, rank, count)
                     for index in self.eval_batch_indices(split, num_examples, batch_size)]
            self._eval_batch_cache[key] = [(self.to_device(self.host_eval_batch(split, part)), is_real)
                                           for part, is_real in parts]
        return self._eval_batch_cache[key]

    # ----- data: NumPy batches (spec.Workload) to and from the device -----
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """NumPy arrays (also inside lists, tuples and named tuples) as tensors on the device; the rest as is."""
        return _map(batch, np.ndarray, self._tensor)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """`array` as a tensor on the device with torch's default strides: NumPy gives an axis of size 1
        its own stride (a (N, 1, 28, 28) image batch then looks channels-last to torch, whose
        convolutions take another kernel: fashion_mnist's loss moved in the 6th digit). On a CPU the
        tensor shares the array's memory; on an accelerator it is the one copy to the device."""
        source = torch.from_numpy(_writable(array))
        strides = np.cumprod((1, *array.shape[:0:-1]))[::-1].tolist() if array.ndim else []
        return source.as_strided(source.shape, strides).to(self.device)

    def to_host(self, tree: Any) -> Any:
        """Tensors as NumPy arrays; the 0-d ones (sums, counts, losses) stacked as float64 and fetched
        in one transfer."""
        scalars = []
        _map(tree, torch.Tensor, lambda t: scalars.append(t) if t.dim() == 0 else None)
        fetched = iter(torch.stack([t.detach().double() for t in scalars]).cpu().numpy() if scalars else ())
        return _map(tree, torch.Tensor, lambda t: next(fetched) if t.dim() == 0 else t.detach().cpu().numpy())

    def evaluation_mode(self):
        """Inference mode (not just `no_grad`): a model must not keep tensors made during evaluation
        for later training."""
        return torch.inference_mode()

    # ----- model -----
    def init_model_fn(self, rng: spec.RandomState) -> tuple[nn.Module, None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng))
            model = self.build_model()
        model.to(self.device)
        self._param_shapes = {name: spec.ShapeTuple(p.shape) for name, p in model.named_parameters()}
        self._param_types = parameter_types(model)
        if distributed.process_count() > 1:  # the trial wraps the model in DDP, whose names start `module.`
            self._param_types = distributed.ParameterTypes(self._param_types)
        self._dropout_rate, self._batch_norm_updates = None, True
        return model, None

    def is_output_params(self, param_key: str) -> bool:
        return distributed.model_name(param_key).startswith(self.output_layer_name + ".")

    def model_fn(
        self,
        params: nn.Module,
        augmented_and_preprocessed_input_batch: dict[str, torch.Tensor],
        model_state: None,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[torch.Tensor, None]:
        del rng
        training = mode == spec.ForwardPassMode.TRAIN
        params.train(training)
        self._set_batch_norm_updates(params, update_batch_norm or not training)
        if dropout_rate is not None and dropout_rate != self._dropout_rate:
            for module in params.modules():
                if isinstance(module, nn.Dropout):
                    module.p = dropout_rate
            self._dropout_rate = dropout_rate
        with torch.set_grad_enabled(training):
            logits = params(self.model_inputs(augmented_and_preprocessed_input_batch))
        return logits, model_state

    def _output_activation(self, logits_batch: torch.Tensor) -> torch.Tensor:
        """AlgoPerf's rule: softmax over the last axis for softmax cross-entropy and CTC, sigmoid for
        sigmoid cross-entropy, the logits themselves for squared or absolute error. Sequence models
        whose `model_fn` returns `(logits, paddings)` (CTC) get `(probabilities, paddings)`."""
        if isinstance(logits_batch, tuple):
            return (self._output_activation(logits_batch[0]), *logits_batch[1:])
        if self.loss_type in (spec.LossType.SOFTMAX_CROSS_ENTROPY, spec.LossType.CTC_LOSS):
            return torch.softmax(logits_batch, dim=-1)
        if self.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
            return torch.sigmoid(logits_batch)
        return logits_batch

    def model_inputs(self, batch: dict[str, torch.Tensor]):
        """What the model is called with: the batch's `inputs` unless a workload's model needs more."""
        return batch["inputs"]

    def _set_batch_norm_updates(self, model: nn.Module, update: bool) -> None:
        """Freeze (momentum 0) or restore BatchNorm running statistics, as AlgoPerf does."""
        if update == self._batch_norm_updates:
            return
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if update:
                    module.momentum = module.__dict__.pop("_saved_momentum", module.momentum)
                else:
                    module.__dict__["_saved_momentum"] = module.momentum
                    module.momentum = 0.0
        self._batch_norm_updates = update

    def loss_fn(
        self,
        label_batch: torch.Tensor,
        logits_batch: torch.Tensor,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """The workload's `loss_type`, as AlgoPerf's torch workloads define it:

        - softmax cross-entropy over the last axis; sequence outputs count every token;
        - sigmoid cross-entropy per label, labels smoothed to y(1 - s) + s/2; every label counts;
        - mean absolute error per example (mean over its remaining axes); every example counts.

        `mask_batch` (shaped like the counted units) zeroes the units it marks 0 and counts the rest.
        Records the training loss (calls made with gradients on) for the harness's divergence check.
        """
        if self.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY:
            per_unit = F.cross_entropy(
                logits_batch.reshape(-1, logits_batch.shape[-1]),
                label_batch.reshape(-1),
                reduction="none",
                label_smoothing=label_smoothing,
            )
        elif self.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
            labels = label_batch.to(logits_batch.dtype) * (1 - label_smoothing) + 0.5 * label_smoothing
            per_unit = F.binary_cross_entropy_with_logits(logits_batch, labels, reduction="none").reshape(-1)
        elif self.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR:
            per_unit = (logits_batch - label_batch).abs().reshape(len(logits_batch), -1).mean(dim=1)
        else:
            raise NotImplementedError(f"{self.loss_type} needs its own loss_fn")
        if mask_batch is not None:
            per_unit = per_unit * mask_batch.reshape(-1)
            n_valid_examples = mask_batch.sum()
        else:
            n_valid_examples = per_unit.numel()
        summed = per_unit.sum()
        if torch.is_grad_enabled():
            self.last_train_loss = (summed, n_valid_examples)
        return {"summed": summed, "n_valid_examples": n_valid_examples, "per_example": per_unit}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def set_global_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def take_train_loss(self) -> tuple[torch.Tensor, torch.Tensor | int] | None:
        taken, self.last_train_loss = self.last_train_loss, None
        return None if taken is None else (taken[0].detach(), taken[1])

    def save_checkpoint(self, path, params, model_state, optimizer_state, loop) -> list[str]:
        return torch_checkpoint.save(path, params, model_state, optimizer_state, loop)

    def load_checkpoint(self, path, params, optimizer_state):
        """The live model, loaded in place, and the rest of the checkpoint."""
        return params, *torch_checkpoint.load(path, params, optimizer_state)

    def hardware(self) -> dict[str, object]:
        if self.device.type != "cuda":
            return {"accelerator": None, "num_devices": 1}
        return {
            "accelerator": torch.cuda.get_device_name(self.device),
            "num_devices": torch.cuda.device_count(),
        }
