"""The workload and submission API, compatible with AlgoPerf v0.6 (mlcommons/algorithmic-efficiency,
`algoperf/spec.py`): the same enum names, function names and argument names, so an AlgoPerf
submission ports by changing imports only.

This module is framework-free. Framework code lives in `harness/backends/<framework>/` and in each
workload's `torch.py`/`jax.py`.
"""

from __future__ import annotations

import abc
import enum
import math
from collections import namedtuple
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

from harness import batching, evaluation

Tensor = Any
RandomState = Any  # an int seed in PyTorch, a PRNG key in JAX (`Workload.random_state`)


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7
    ATTENTION_Q = 8
    ATTENTION_K = 9
    ATTENTION_V = 10
    ATTENTION_OUT = 11
    ATTENTION_QKV = 12
    ATTENTION_KV = 13
    ATTENTION_BIAS = 14


class ShapeTuple:
    """A parameter's shape as one leaf of a pytree (`workload.param_shapes` values), as in AlgoPerf:
    tree utilities stop here instead of descending into the shape's integers."""

    __slots__ = ("shape_tuple",)

    def __init__(self, shape_tuple: tuple[int, ...]) -> None:
        self.shape_tuple = tuple(int(d) for d in shape_tuple)

    def __repr__(self) -> str:
        return f"ShapeTuple({self.shape_tuple})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ShapeTuple):
            return self.shape_tuple == other.shape_tuple
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.shape_tuple)


# AlgoPerf v0.6's type names (`algoperf/spec.py`), for submissions' annotations. Trees are dicts
# keyed by parameter name (torch: `model.named_parameters()` names), possibly nested.
Shape = tuple[int, ...] | ShapeTuple
ParameterKey = str
ParameterShapeTree = dict[ParameterKey, Any]  # leaves: ShapeTuple
ParameterTypeTree = dict[ParameterKey, Any]  # leaves: ParameterType
ParameterContainer = Any  # torch: the nn.Module itself, as in AlgoPerf
ModelAuxiliaryState = Any
ModelInitState = tuple[ParameterContainer, ModelAuxiliaryState]
OptimizerState = Any
Hyperparameters = Any  # a namedtuple built from the search-space point, or None (self-tuning)
UpdateReturn = tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]
Timing = int
Steps = int


class TrainingCompleteError(Exception):
    """Raised by `update_params` to end training early; the harness then runs a final evaluation."""


# The submission functions' types, with AlgoPerf v0.6's names and argument order (DESIGN.md).
InitOptimizerFn = Callable[
    [Any, ParameterContainer, ModelAuxiliaryState, Hyperparameters, RandomState], OptimizerState
]
UpdateParamsFn = Callable[  # the last argument, `train_state`, only for functions that declare it
    [Any, ParameterContainer, ParameterTypeTree, ModelAuxiliaryState, Hyperparameters, dict, LossType,
     OptimizerState, list, int, RandomState, Any],
    UpdateReturn,
]
PrepareForEvalFn = Callable[
    [Any, ParameterContainer, ParameterTypeTree, ModelAuxiliaryState, Hyperparameters, LossType,
     OptimizerState, list, int, RandomState],
    UpdateReturn,
]
DataSelectionFn = Callable[
    [Any, Iterator, OptimizerState, ParameterContainer, ModelAuxiliaryState, Hyperparameters, int, RandomState],
    dict,
]
GetBatchSizeFn = Callable[[str], int]


def make_hyperparameters(point: Mapping[str, Any] | None) -> Hyperparameters:
    """Turn a search-space point into AlgoPerf's attribute-access namedtuple (None stays None).

    The tuple remembers which fields were read, in `type(hp).fields_read`, so the harness can warn
    about search-space keys a submission never uses.
    """
    if point is None:
        return None
    names = sorted(point)
    fields_read: set[str] = set()

    class Hyperparameters(namedtuple("Hyperparameters", names)):
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:  # only for names that are not fields
            raise AttributeError(f"hyperparameter {name!r} is not in this trial's search-space point "
                                 f"(it has {', '.join(names) or 'nothing'})")

        def __getattribute__(self, name: str) -> Any:
            if name in names:
                fields_read.add(name)
            elif name == "_asdict":
                fields_read.update(names)
            return super().__getattribute__(name)

    Hyperparameters.fields_read = fields_read
    return Hyperparameters(**{k: point[k] for k in names})


class Workload(abc.ABC):
    """A fixed model + dataset + loss + targets + budget (AlgoPerf's `spec.Workload`).

    A workload's framework-independent facts are class attributes of its `workload.py` class;
    its `torch.py` adds the model and the framework code. Metric direction: `"min"` means lower
    is better (error rate, perplexity, WER), `"max"` higher is better (accuracy, BLEU, SSIM).
    """

    name: str
    framework: str  # "pytorch" or "jax": set by the framework's base class
    suite: str | None = None  # "mini" for the mini suite (`submit.py --suite mini`)
    target_metric_name: str
    metric_direction: str  # "min" or "max"
    validation_target_value: float
    test_target_value: float
    max_allowed_runtime_sec: float  # the budget on the calibration machine (mini suite) or AlgoPerf's
    eval_period_time_sec: float
    # Mini suite: the NAdamW baseline's timed seconds per step (PyTorch) on the calibration machine, as
    # `python -m harness.calibrate` measures it; budget and evaluation period scale with this machine's
    # figure over it (harness/machine_profile.py). None: the budget does not scale (AlgoPerf scale, fixed hardware).
    calibration_seconds_per_step: float | None = None
    step_hint: int
    loss_type: LossType
    reference_batch_size: int  # used when a submission does not define get_batch_size
    num_train_examples: int
    num_validation_examples: int
    num_test_examples: int
    num_eval_train_examples: int
    eval_batch_size: int

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._param_shapes = None
        self._param_types = None
        self._splits: dict[str, dict[str, Any]] | None = None
        self._data_hash: str | None = None
        self._eval_batch_cache: dict[tuple[str, int, int], list[dict]] = {}
        self.metrics_logger = None

    # ----- AlgoPerf's workload extras -----
    def attach_metrics_logger(self, metrics_logger) -> None:
        """Give submissions a logger: `workload.metrics_logger.append_scalar_metrics(metrics, global_step)`."""
        self.metrics_logger = metrics_logger

    @property
    def train_mean(self) -> Any:
        """The mean of the training inputs, where the AlgoPerf analogue defines one (image workloads)."""
        raise NotImplementedError(f"workload {self.name} has no train_mean (as its AlgoPerf analogue)")

    @property
    def train_stddev(self) -> Any:
        """The standard deviation of the training inputs, where the AlgoPerf analogue defines one."""
        raise NotImplementedError(f"workload {self.name} has no train_stddev (as its AlgoPerf analogue)")

    def output_activation_fn(self, logits_batch: Tensor, framework: str) -> Tensor:
        """Probabilities from logits by the loss type (softmax, sigmoid; identity for regression)."""
        if framework not in ("pytorch", "jax"):
            raise ValueError(f"framework must be 'pytorch' or 'jax', got {framework!r}")
        if framework != self.framework:
            raise ValueError(f"workload {self.name} is a {self.framework} workload, not a {framework} one")
        return self._output_activation(logits_batch)

    @abc.abstractmethod
    def _output_activation(self, logits_batch: Tensor) -> Tensor:
        """The framework's activation for `output_activation_fn`."""

    # ----- targets -----
    def meets_target(self, value: float, target: float) -> bool:
        """True when `value` is at least as good as `target` in this workload's direction."""
        if value is None or not math.isfinite(value):
            return False
        return value <= target if self.metric_direction == "min" else value >= target

    def has_reached_validation_target(self, eval_result: Mapping[str, float]) -> bool:
        return self.meets_target(
            eval_result[f"validation/{self.target_metric_name}"], self.validation_target_value
        )

    def has_reached_test_target(self, eval_result: Mapping[str, float]) -> bool:
        return self.meets_target(
            eval_result[f"test/{self.target_metric_name}"], self.test_target_value
        )

    # ----- parameters -----
    @property
    def param_shapes(self):
        if self._param_shapes is None:
            raise ValueError("call workload.init_model_fn() before workload.param_shapes")
        return self._param_shapes

    @property
    def model_params_types(self):
        if self._param_types is None:
            raise ValueError("call workload.init_model_fn() before workload.model_params_types")
        return self._param_types

    # ----- data -----
    @abc.abstractmethod
    def read_splits(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Read the dataset: numpy arrays `{split: {'inputs', 'targets'}}` for 'train', 'validation'
        and 'test', and a content hash of the data. Raises `DataMissingError` naming what to install."""

    def load_splits(self) -> dict[str, dict[str, Any]]:
        """The splits of `read_splits`, read once per workload object."""
        if self._splits is None:
            self._splits, self._data_hash = self.read_splits()
        return self._splits

    def data_hash(self) -> str:
        """A content hash of the dataset, recorded in each run's meta.json (loads the data)."""
        self.load_splits()
        return self._data_hash

    # ----- batches: framework-free index and NumPy batches, put on the device by the backend -----
    def host_split(self, split: str) -> dict[str, Any]:
        """A split's arrays with a leading example axis ('eval_train' is the train split)."""
        return self.load_splits()["train" if split == "eval_train" else split]

    def split_size(self, split: str) -> int:
        return len(self.host_split(split)["targets"])

    def train_batch_indices(self, data_rng: RandomState, split: str, global_batch_size: int) -> Iterator[Any]:
        """The example indices of each training batch, endlessly: epochs of a seeded permutation
        (`batching.EpochOrder`), an epoch's last incomplete batch dropped. Checks the batch size now."""
        n = self.split_size(split)
        batching.check_batch_size(global_batch_size, n, split)
        return batching.epoch_batches(batching.EpochOrder(data_rng), n, global_batch_size)

    def eval_batch_indices(self, split: str, num_examples: int, batch_size: int) -> Iterator[Any]:
        """The example indices of each evaluation batch of the first `num_examples` of `split`: in order."""
        return batching.in_order(min(num_examples, self.split_size(split)), batch_size)

    def host_batch(self, split: str, index) -> dict[str, Any]:
        """The examples `index` of a split as one batch of NumPy arrays."""
        return {key: value[index] for key, value in self.host_split(split).items()}

    def host_eval_batch(self, split: str, index) -> dict[str, Any]:
        """An evaluation batch ('eval_train', 'validation', 'test'), with whatever the evaluation needs
        besides the arrays (reference texts), prepared once and kept; by default `host_batch`."""
        return self.host_batch(split, index)

    def _build_input_queue(
        self, data_rng: RandomState, split: str, data_dir: str, global_batch_size: int
    ) -> Iterator[dict[str, Tensor]]:
        """An endless iterator of `train_batch_indices`' batches on the device. The data is loaded now
        (untimed, at initialisation), not at the first `next()`."""
        del data_dir
        indices = self.train_batch_indices(data_rng, split, global_batch_size)
        return (self.to_device(self.host_batch(split, index)) for index in indices)

    def cached_eval_batches(self, split: str, num_examples: int, batch_size: int) -> list[dict]:
        """`host_eval_batch` of each of `eval_batch_indices`, on the device, assembled at the first
        evaluation and kept: the data never changes, so later evaluations only run the model."""
        key = (split, num_examples, batch_size)
        if key not in self._eval_batch_cache:
            self._eval_batch_cache[key] = [
                self.to_device(self.host_eval_batch(split, index))
                for index in self.eval_batch_indices(split, num_examples, batch_size)
            ]
        return self._eval_batch_cache[key]

    @abc.abstractmethod
    def to_device(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch with its NumPy arrays as the framework's arrays on the device; other values as they are."""

    @abc.abstractmethod
    def to_host(self, tree: Any) -> Any:
        """The tree with the framework's arrays as NumPy arrays, fetched together."""

    # ----- model -----
    @abc.abstractmethod
    def init_model_fn(self, rng: RandomState) -> tuple[ParameterContainer, ModelAuxiliaryState]:
        """Return (initial_params, initial_model_state)."""

    @abc.abstractmethod
    def model_fn(
        self,
        params: ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Tensor],
        model_state: ModelAuxiliaryState,
        mode: ForwardPassMode,
        rng: RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Tensor, ModelAuxiliaryState]:
        """Return (logits_batch, new_model_state)."""

    @abc.abstractmethod
    def loss_fn(
        self,
        label_batch: Tensor,
        logits_batch: Tensor,
        mask_batch: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Tensor]:
        """Return {'summed', 'n_valid_examples', 'per_example'}; no regularisation."""

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """`metrics_from_sums` of `eval_batch_sums` accumulated over the split's cached evaluation
        batches (`evaluation.BatchSums`), in the framework's evaluation mode."""
        del data_dir, global_step
        sums = evaluation.BatchSums()
        with self.evaluation_mode():
            for batch in self.cached_eval_batches(split, num_examples, global_batch_size):
                sums.add(self.eval_batch_sums(split, params, model_state, rng, batch))
        return self.metrics_from_sums(sums.result(self.to_host))

    def eval_batch_sums(self, split: str, params, model_state, rng: RandomState, batch: dict) -> dict[str, Tensor]:
        """One evaluation batch's `eval_sums` of the model's logits; a workload whose evaluation needs
        more than the logits (translations) extends it."""
        logits, _ = self.model_fn(params, batch, model_state, ForwardPassMode.EVAL, rng, update_batch_norm=False)
        return self.eval_sums(logits, batch)

    @abc.abstractmethod
    def eval_sums(self, logits: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-batch values that `metrics_from_sums` turns into metrics: scalars (loss, errors,
        counts) are summed over the split's batches; arrays with a leading batch axis (scores for a
        metric that needs the whole split, such as average precision) are concatenated."""

    @abc.abstractmethod
    def metrics_from_sums(self, sums: dict[str, Any]) -> dict[str, float]:
        """Final metrics of a split from the accumulated sums (floats) and concatenations (float32
        NumPy arrays) of `eval_sums`."""

    @abc.abstractmethod
    def evaluation_mode(self) -> ContextManager:
        """A context in which evaluation runs (no gradients)."""

    def note_step_outputs(self, outputs: Any) -> None:
        """The trial loop hands over what `update_params` (or `prepare_for_eval`) returned, for
        frameworks whose `sync` waits on particular arrays (JAX); a no-op by default."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Wait until the device has finished all queued work (before the clock is read)."""

    @abc.abstractmethod
    def set_global_seed(self, seed: int) -> None:
        """Seed the framework's global random state (dropout and other in-step randomness)."""

    def random_state(self, seed: int) -> RandomState:
        """AlgoPerf's `rng` argument made from one of the trial's integer seeds, in the framework's
        form: the integer itself here; a PRNG key in JAX."""
        return seed

    @abc.abstractmethod
    def take_train_loss(self) -> tuple[Tensor, Tensor | int] | None:
        """(summed loss, example count) of the latest `loss_fn` call made for training since the last
        call, as the framework's values (no device→host transfer), or None if there was none."""

    @abc.abstractmethod
    def save_checkpoint(self, path: Path, params, model_state, optimizer_state, loop: dict) -> list[str]:
        """Atomically save model, optimizer state, random states and the trial loop's `loop` dict, as
        data that loads without running code; returns a warning per part of the state left out."""

    @abc.abstractmethod
    def load_checkpoint(self, path: Path, params, optimizer_state) -> tuple[Any, Any, Any, dict]:
        """Load a checkpoint into freshly initialised params and optimizer state:
        (params, model_state, optimizer_state, loop)."""

    @abc.abstractmethod
    def hardware(self) -> dict[str, Any]:
        """The accelerator part of the hardware fingerprint: `accelerator` and `num_devices`."""

    def eval_model(
        self,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Evaluate on a train subset, validation and test: keys 'train/…', 'validation/…', 'test/…'."""
        del imagenet_v2_data_dir
        results: dict[str, float] = {}
        for prefix, split, n in (
            ("train", "eval_train", self.num_eval_train_examples),
            ("validation", "validation", self.num_validation_examples),
            ("test", "test", self.num_test_examples),
        ):
            metrics = self._eval_model_on_split(
                split, n, global_batch_size, params, model_state, rng, data_dir, global_step
            )
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
        return results

    def facts(self) -> dict[str, Any]:
        """The framework-independent facts recorded in meta.json."""
        return {
            "target_metric_name": self.target_metric_name,
            "metric_direction": self.metric_direction,
            "validation_target_value": self.validation_target_value,
            "test_target_value": self.test_target_value,
            "max_allowed_runtime_sec": self.max_allowed_runtime_sec,
            "eval_period_time_sec": self.eval_period_time_sec,
            "calibration_seconds_per_step": self.calibration_seconds_per_step,
            "step_hint": self.step_hint,
            "num_validation_examples": self.num_validation_examples,
            "num_test_examples": self.num_test_examples,
        }
