"""PyTorch side of the workload API: tensors on the device, input queues, model_fn, loss_fn, eval.

A concrete workload's `torch.py` subclasses `TorchWorkload` together with its framework-free
facts class, and supplies `build_model()` and `eval_sums()`; it may override `model_inputs()`
(what the model is called with) and, when its examples are not rows of equal-shaped tensors,
`split_arrays()` and `gather()` (how a batch is assembled, for training and evaluation alike).
"""

from __future__ import annotations

import abc
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import spec, torch_checkpoint
from harness.torch_process import default_device

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


class TorchWorkload(spec.Workload):
    """Generic PyTorch implementation over in-memory splits `{'inputs', 'targets'}`."""

    framework = "pytorch"
    output_layer_name = "head"  # the model's final layer; see `is_output_params`

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir)
        self.device = default_device()
        self._tensors: dict[str, dict[str, torch.Tensor]] | None = None
        self._eval_batch_cache: dict[tuple[str, int, int], list[dict]] = {}
        self._dropout_rate: float | None = None
        self._batch_norm_updates = True
        self.last_train_loss: tuple[torch.Tensor, torch.Tensor | int] | None = None

    # ----- what a concrete workload supplies -----
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the global torch seed is set by `init_model_fn`)."""

    @abc.abstractmethod
    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-batch values that `metrics_from_sums` turns into metrics: scalars (loss, errors,
        counts) are summed over the split's batches; tensors with a leading batch axis (scores for
        a metric that needs the whole split, such as average precision) are concatenated."""

    @abc.abstractmethod
    def metrics_from_sums(self, sums: dict[str, float | np.ndarray]) -> dict[str, float]:
        """Final metrics of a split from the accumulated sums (floats) and concatenations (float32
        numpy arrays) of `eval_sums` (framework-free)."""

    # ----- data -----
    @property
    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        if self._tensors is None:
            self._tensors = {
                split: {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in arrays.items()}
                for split, arrays in self.load_splits().items()
            }
        return self._tensors

    def split_arrays(self, split: str) -> dict[str, torch.Tensor]:
        """A split's examples as tensors with a leading example axis (`targets` among them)."""
        return self.tensors[split]

    def gather(self, arrays: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of examples `index` (an index tensor on any device) of `split_arrays`, on the device."""
        index = index.to(self.device)
        return {key: value.index_select(0, index) for key, value in arrays.items()}

    def _build_input_queue(
        self, data_rng: spec.RandomState, split: str, data_dir: str, global_batch_size: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Endless epochs of a seeded permutation; the last incomplete batch of an epoch is dropped.

        The data is loaded now (untimed, at initialisation), not at the first `next()`.
        """
        del data_dir
        arrays = self.split_arrays(split)
        n = len(arrays["targets"])
        if global_batch_size > n:
            raise ValueError(f"batch size {global_batch_size} exceeds the {n} examples of split {split!r}")
        generator = torch.Generator().manual_seed(int(data_rng))

        def batches() -> Iterator[dict[str, torch.Tensor]]:
            while True:
                # Moved once an epoch to where the arrays live, so `gather` moves no index in the timed loop.
                order = torch.randperm(n, generator=generator).to(arrays["targets"].device)
                for start in range(0, n - global_batch_size + 1, global_batch_size):
                    yield self.gather(arrays, order[start : start + global_batch_size])

        return batches()

    # ----- model -----
    def init_model_fn(self, rng: spec.RandomState) -> tuple[nn.Module, None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng))
            model = self.build_model()
        model.to(self.device)
        self._param_shapes = {name: spec.ShapeTuple(p.shape) for name, p in model.named_parameters()}
        self._param_types = parameter_types(model)
        self._dropout_rate, self._batch_norm_updates = None, True
        return model, None

    def is_output_params(self, param_key: str) -> bool:
        return param_key.startswith(self.output_layer_name + ".")

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

    # ----- evaluation -----
    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: nn.Module,
        model_state: None,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """`eval_sums` accumulated over the split's evaluation batches, in inference mode.

        The batches are assembled once and kept (`cached_eval_batches`). Scalar sums stay on the
        device until the end, so the loop never waits for the device. Inference mode (not just
        `no_grad`) means a model must not keep tensors made during evaluation for later training.
        """
        del data_dir, global_step
        batches = self.cached_eval_batches(split, num_examples, global_batch_size)
        sums: dict[str, torch.Tensor] = {}
        parts: dict[str, list[torch.Tensor]] = {}
        with torch.inference_mode():
            for batch in batches:
                logits, _ = self.model_fn(
                    params, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False
                )
                for key, value in self.eval_sums(logits, batch).items():
                    if value.dim() == 0:  # summed in float64: the total barely depends on the batch size
                        sums[key] = sums[key] + value.double() if key in sums else value.double()
                    else:
                        parts.setdefault(key, []).append(value)
            accumulated = {k: float(v) for k, v in sums.items()}
            accumulated.update({k: torch.cat(v).float().cpu().numpy() for k, v in parts.items()})
        return self.metrics_from_sums(accumulated)

    def eval_batches(self, split: str, num_examples: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """The first `num_examples` examples of `split` ('eval_train': of train), in order, in batches."""
        arrays = self.split_arrays("train" if split == "eval_train" else split)
        num_examples = min(num_examples, len(arrays["targets"]))
        for start in range(0, num_examples, batch_size):
            yield self.gather(arrays, torch.arange(start, min(start + batch_size, num_examples)))

    def prepare_eval_batch(self, batch: dict) -> dict:
        """Evaluation-side preprocessing of one batch of `eval_batches`, done once per batch and kept
        (reference texts, padding cut off); the default keeps the batch as it is."""
        return batch

    def cached_eval_batches(self, split: str, num_examples: int, batch_size: int) -> list[dict]:
        """`eval_batches`, each through `prepare_eval_batch`, assembled at the first evaluation and
        kept: the data never changes, so later evaluations only run the model."""
        key = (split, num_examples, batch_size)
        if key not in self._eval_batch_cache:
            with torch.no_grad():
                batches = self.eval_batches(split, num_examples, batch_size)
                self._eval_batch_cache[key] = [self.prepare_eval_batch(batch) for batch in batches]
        return self._eval_batch_cache[key]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def set_global_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def latest_train_loss(self) -> float | None:
        if self.last_train_loss is None:
            return None
        summed, n_valid_examples = self.last_train_loss
        return float(summed.detach()) / float(n_valid_examples)

    def save_checkpoint(self, path, params, model_state, optimizer_state, loop) -> list[str]:
        return torch_checkpoint.save(path, params, model_state, optimizer_state, loop)

    def load_checkpoint(self, path, params, optimizer_state):
        return torch_checkpoint.load(path, params, optimizer_state)

    def hardware(self) -> dict[str, object]:
        if self.device.type != "cuda":
            return {"accelerator": None, "num_devices": 1}
        return {
            "accelerator": torch.cuda.get_device_name(self.device),
            "num_devices": torch.cuda.device_count(),
        }
