"""JAX side of the workload API: batches on the device, model_fn, loss_fn, sync, checkpoints.

A concrete workload's `jax.py` subclasses `JaxWorkload` together with its framework-free class
(`workload.py`: data, batches, metrics), and supplies `build_model()` (a Flax Linen module whose
`__call__(inputs, train, dropout_rate=None)` gives the logits; `dropout_rate` None is the model's
default) and `eval_sums()`; it may override `model_inputs()`.

Flax Linen rather than NNX: Linen's pure `apply(variables, ...)` is AlgoPerf's JAX API as it is —
parameters and model state (BatchNorm statistics) are pytrees that the submission passes around —
where NNX's stateful modules would be split and merged at every call of the API.

Parameters are a pytree of dicts (`{'params': ...}` of `model.init`), the model state the rest of
the variables (`{'batch_stats': ...}`, or `{}`). `rng` arguments are PRNG keys, or int seeds that
are turned into keys. Nothing waits for the device except `sync`, which blocks on the outputs of the
latest step (`note_step_outputs`): JAX dispatches asynchronously, also on a CPU.

On several devices (`use_devices`), one process drives a 1-D mesh of them (`sharding.py`): batches
are split along their first axis (an array whose first axis does not divide evenly is replicated),
parameters, model and optimizer state are replicated (`placement`), and the compiled steps run on
the mesh (XLA partitions them and sums the gradients across the devices).
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import SingleDeviceSharding

from harness import spec
from harness.backends.jax import checkpoint, sharding


def rng_key(rng) -> jax.Array:
    """A PRNG key from AlgoPerf's `rng` argument: a key as it is, an int seed (any size) as a key."""
    if isinstance(rng, (int, np.integer)):
        return jax.random.PRNGKey(int(rng) % 2**32)
    return rng


def _path_names(path) -> list[str]:
    return [str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path]


def parameter_types(params) -> dict:
    """AlgoPerf's parameter-type tree for a Flax parameter tree (same structure, ParameterType leaves),
    by the Linen names: `kernel` of a convolution (rank > 2) CONV_WEIGHT, `scale`/`bias` of a module
    named `bn*`/`BatchNorm*` or `ln*`/`LayerNorm*` the normalisation types, `embedding` EMBEDDING,
    other `bias` BIAS, the rest WEIGHT."""
    T = spec.ParameterType

    def kind(path, leaf) -> spec.ParameterType:
        *modules, name = _path_names(path)
        module = modules[-1] if modules else ""
        if module.startswith(("bn", "BatchNorm")) and name in ("scale", "bias"):
            return T.BATCH_NORM_SCALE if name == "scale" else T.BATCH_NORM_BIAS
        if module.startswith(("ln", "LayerNorm")) and name in ("scale", "bias"):
            return T.LAYER_NORM_SCALE if name == "scale" else T.LAYER_NORM_BIAS
        if name == "embedding":
            return T.EMBEDDING
        if name == "kernel" and np.ndim(leaf) > 2:
            return T.CONV_WEIGHT
        return T.BIAS if name == "bias" else T.WEIGHT

    return jax.tree_util.tree_map_with_path(kind, params)


class JaxWorkload(spec.Workload):
    """The JAX side of a workload whose framework-free facts, data and metrics come from its `workload.py` class."""

    framework = "jax"
    output_layer_name = "head"  # the model's final layer; see `is_output_params`

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir)
        self.device = jax.devices()[0]
        self.placement: jax.sharding.Sharding = SingleDeviceSharding(self.device)  # where the trial's state lives
        self._batch_sharding: jax.sharding.Sharding | None = None  # several devices: batches split along axis 0
        self._model: nn.Module | None = None
        self._step_outputs: Any = None
        self._train_loss: tuple | None = None
        self._eval_step = jax.jit(self._eval_step_sums)

    # ----- what a concrete workload supplies -----
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The Flax Linen module; its `__call__(inputs, train, dropout_rate=None)` returns the logits."""

    def model_inputs(self, batch: dict):
        """What the model is called with: the batch's `inputs` unless a workload's model needs more."""
        return batch["inputs"]

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = self.build_model()
        return self._model

    # ----- several devices: a mesh driven from this process -----
    def use_devices(self, num_devices: int) -> "MeshDevices":
        """Run on the first `num_devices` devices: batches split across them, the state replicated."""
        sharding.use_devices(num_devices)
        self.placement = sharding.get_replicate_sharding()
        self._batch_sharding = sharding.get_batch_dim_sharding()
        return MeshDevices(self, num_devices)

    # ----- data -----
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """NumPy arrays (also inside lists, tuples and named tuples) as arrays on the device (on several,
        split along the first axis where it divides evenly); the rest as is."""
        return jax.tree_util.tree_map(lambda x: jax.device_put(x, self._sharding_of(x)) if isinstance(x, np.ndarray)
                                      else x, batch)

    def _sharding_of(self, array: np.ndarray) -> jax.sharding.Sharding | jax.Device:
        if self._batch_sharding is None:
            return self.device
        count = self._batch_sharding.mesh.size
        return self._batch_sharding if array.ndim and len(array) % count == 0 else self.placement

    def to_host(self, tree: Any) -> Any:
        """Device arrays as NumPy arrays, fetched together (`jax.device_get`)."""
        return jax.device_get(tree)

    def evaluation_mode(self):
        return contextlib.nullcontext()

    # ----- model -----
    def init_model_fn(self, rng: spec.RandomState) -> tuple[Any, Any]:
        """Parameters and model state from `model.init` on the first two training examples."""
        example = self.to_device(self.host_batch("train", np.arange(2)))
        variables = jax.jit(lambda key, inputs: self.model.init(key, inputs, train=False))(
            rng_key(rng), self.model_inputs(example))  # `train=False`: no dropout key needed
        variables = dict(jax.device_put(variables, self.placement))  # committed, as the step's outputs: no recompile
        params = variables.pop("params")
        self._param_shapes = jax.tree_util.tree_map(lambda p: spec.ShapeTuple(p.shape), params)
        self._param_types = parameter_types(params)
        return params, variables

    def is_output_params(self, param_key) -> bool:
        """Whether a parameter, given by its tree path (as `tree_map_with_path` gives it) or its
        '/'-joined names, belongs to the output layer."""
        names = param_key.split("/") if isinstance(param_key, str) else _path_names(param_key)
        return names[0] == self.output_layer_name

    def model_fn(self, params, augmented_and_preprocessed_input_batch, model_state, mode, rng, update_batch_norm,
                 dropout_rate=None):
        """(logits, new model state). In training mode with `update_batch_norm`, BatchNorm uses and
        updates the batch statistics; otherwise it uses the running ones and the state is unchanged.
        A model with dropout reads `dropout_rate` (None: the model's default) and the 'dropout' key."""
        train = mode == spec.ForwardPassMode.TRAIN
        variables = {"params": params, **model_state}
        inputs = self.model_inputs(augmented_and_preprocessed_input_batch)
        rngs = {"dropout": rng_key(rng)} if train and rng is not None else {}
        if train and model_state:  # BatchNorm normalises with the batch's statistics, as torch's train mode
            logits, new_state = self.model.apply(variables, inputs, train=True, dropout_rate=dropout_rate,
                                                 mutable=list(model_state), rngs=rngs)
            return logits, dict(new_state) if update_batch_norm else model_state
        return self.model.apply(variables, inputs, train=train, dropout_rate=dropout_rate, rngs=rngs), model_state

    def _output_activation(self, logits_batch):
        if isinstance(logits_batch, tuple):
            return (self._output_activation(logits_batch[0]), *logits_batch[1:])
        if self.loss_type in (spec.LossType.SOFTMAX_CROSS_ENTROPY, spec.LossType.CTC_LOSS):
            return jax.nn.softmax(logits_batch, axis=-1)
        if self.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
            return jax.nn.sigmoid(logits_batch)
        return logits_batch

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing: float = 0.0) -> dict:
        """The workload's `loss_type`, defined as the torch backend's `loss_fn` (and AlgoPerf's):
        softmax cross-entropy over the last axis with smoothing (1 − s)·CE + s·mean over classes of
        −log p; sigmoid cross-entropy per label with labels y(1 − s) + s/2; mean absolute error per
        example. `mask_batch` zeroes the units it marks 0 and counts the rest."""
        if self.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY:
            logp = jax.nn.log_softmax(logits_batch.reshape(-1, logits_batch.shape[-1]), axis=-1)
            nll = -jnp.take_along_axis(logp, label_batch.reshape(-1, 1), axis=-1)[:, 0]
            per_unit = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=-1)
        elif self.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
            labels = label_batch.astype(logits_batch.dtype) * (1 - label_smoothing) + 0.5 * label_smoothing
            per_unit = optax.sigmoid_binary_cross_entropy(logits_batch, labels).reshape(-1)
        elif self.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR:
            per_unit = jnp.abs(logits_batch - label_batch).reshape(len(logits_batch), -1).mean(axis=1)
        else:
            raise NotImplementedError(f"{self.loss_type} needs its own loss_fn")
        if mask_batch is not None:
            per_unit = per_unit * mask_batch.reshape(-1)
            n_valid_examples = mask_batch.sum()
        else:
            n_valid_examples = per_unit.size
        return {"summed": per_unit.sum(), "n_valid_examples": n_valid_examples, "per_example": per_unit}

    # ----- evaluation: one compiled forward pass and eval_sums per batch shape -----
    def _eval_step_sums(self, params, model_state, batch):
        logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, None, False)
        return self.eval_sums(logits, batch)

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        return self._eval_step(params, model_state, batch)

    # ----- the trial loop's hooks -----
    def record_train_loss(self, summed, n_valid_examples) -> None:
        """Hand the step's training loss to the trial loop (the short form's step does)."""
        self._train_loss = (summed, n_valid_examples)

    def take_train_loss(self):
        taken, self._train_loss = self._train_loss, None
        return taken

    def note_step_outputs(self, outputs: Any) -> None:
        self._step_outputs = outputs

    def sync(self) -> None:
        """Block until the latest step's outputs are computed (`jax.block_until_ready`)."""
        if self._step_outputs is not None:
            jax.block_until_ready(self._step_outputs)

    def set_global_seed(self, seed: int) -> None:
        """JAX has no global random state: randomness comes from the `rng` keys of each call."""
        del seed

    def random_state(self, seed: int) -> jax.Array:
        """A PRNG key, as AlgoPerf's JAX submissions get (`jax.random.split(rng)` works on it)."""
        return rng_key(seed)

    def save_checkpoint(self, path, params, model_state, optimizer_state, loop) -> list[str]:
        return checkpoint.save(path, params, model_state, optimizer_state, loop)

    def load_checkpoint(self, path, params, optimizer_state):
        return checkpoint.load(path, params, optimizer_state, self.placement)

    def hardware(self) -> dict[str, object]:
        if self.device.platform == "cpu":
            return {"accelerator": None, "num_devices": 1}
        return {"accelerator": self.device.device_kind, "num_devices": jax.device_count()}


class MeshDevices:
    """The trial loop's view of a JAX trial on several devices (harness.trial.Devices): one process, so
    its decisions and losses are already everyone's; the model is replicated on the mesh."""

    is_main = True

    def __init__(self, workload: JaxWorkload, count: int) -> None:
        self._workload, self.count = workload, count

    def place_model(self, params, model_state):
        return jax.device_put((params, model_state), self._workload.placement)

    def first_says(self, *flags: bool) -> tuple[bool, ...]:
        return flags

    def sum(self, values: list) -> list:
        return values
