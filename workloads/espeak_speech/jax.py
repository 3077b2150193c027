"""The Conformer with a CTC head of `torch.py` in Flax Linen: the same layers, shapes and initial
distributions (dense and convolution kernels and biases torch's defaults U(±1/√fan_in); LayerNorm ε
1e-5 with the variance computed as torch does; attention scaled by 1/√head_width as
`F.scaled_dot_product_attention`, padded frames never attended to), the same sinusoidal positions,
and dropout (rate 0 unless `dropout_rate` says otherwise) at the same places; only the dropout masks,
drawn from JAX's keys, differ from torch's. The convolution module's second LayerNorm, torch's `norm`,
is `ln2` here (the backend types LayerNorm parameters by an `ln` name).

    python submit.py --framework jax --workload espeak_speech --submission nadamw

Static shapes (`workload.static_shapes`, in `to_device`): a batch's frames are cut or zero-padded to its
longest utterance rounded up to a multiple of FRAME_MULTIPLE, and its targets zero-padded to a multiple
of LABEL_MULTIPLE characters (96 for every split). A trial's training step compiles for at most
⌈522 / 64⌉ = 9 frame counts (522: the longest training utterance), in practice the 4-5 that random
batches of 16 reach (320-576); evaluation compiles once per frame count its length-sorted batches
reach, shared by the splits (5 for the three full splits). Padded frames change nothing: the model
masks them as torch's does (zeroed inputs of the subsampling convolutions and of the depthwise
convolution, masked attention keys) and reports them as paddings, which the loss and the decoding
skip; padded targets are 0, which the loss skips.

Loss: `optax.ctc_loss`, −log p(labels | frames) per utterance (blank 0; logits log-softmaxed inside),
the quantity of torch's `F.ctc_loss(reduction='none')`. optax scores impossible alignments with
log_epsilon = −1e5 instead of −∞, so an utterance with fewer frames than labels plus adjacent repeats
counts 0 here, as `zero_infinity=True` makes it in torch. The forward recursion is a `lax.scan` of
`logaddexp`s, differentiable twice: Hessian-vector products (`jax.jvp` of `jax.grad`) need nothing like
torch's `ctc_nll`. Summed over utterances and divided by the target characters, as in torch.

Metric: word error rate of greedy CTC decoding. The loss, the best class per frame and the frame
counts are compiled with the forward pass; decoding and jiwer (`workload.greedy_texts`,
`workload.word_errors`) run on the host.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from harness import spec
from harness.backends.jax.layers import TORCH_KERNEL_INIT, torch_bias_init, torch_layer_norm, with_fused_attention_types
from harness.backends.jax.workload import JaxWorkload
from workloads.espeak_speech import data
from workloads.espeak_speech.workload import (CONVOLUTION_KERNEL, DEPTH, FEED_FORWARD_EXPANSION, HEADS, NUM_CLASSES,
                                              WIDTH, EspeakSpeechWorkload, greedy_texts, static_shapes,
                                              subsampled_lengths, word_errors)

FRAME_MULTIPLE = 64  # input frames (16 after subsampling) per step of the padded batch shapes
LABEL_MULTIPLE = 32  # target characters: every split's targets (66, 67 and 87 wide) become 96 wide
layer_norm = torch_layer_norm(1e-5)


def dense(features: int, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=TORCH_KERNEL_INIT, bias_init=torch_bias_init(fan_in), name=name)


def frame_mask(lengths: jax.Array, frames: int) -> jax.Array:
    """(batch, frames) float mask: 1 on the first `lengths` frames of each row."""
    return (jnp.arange(frames)[None, :] < lengths[:, None]).astype(jnp.float32)


def sinusoids(frames: int, width: int) -> jax.Array:
    """Sinusoidal position signal (Vaswani et al., 2017), timescales 1 to 10,000 as in AlgoPerf."""
    timescales = jnp.exp(-math.log(10_000.0) * jnp.arange(width // 2) / (width // 2 - 1))
    angles = jnp.arange(frames)[:, None] * timescales[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)


class Subsampling(nn.Module):
    """Two 1-D convolutions over time (kernel 3, stride 2, padding 1, mel bins as channels), each with
    ReLU and its input's padded frames zeroed: 4x fewer frames."""

    width: int

    @nn.compact
    def __call__(self, x, lengths):
        for name, valid in (("conv1", lengths), ("conv2", (lengths + 1) // 2)):
            fan_in = 3 * x.shape[-1]
            x = x * frame_mask(valid, x.shape[1])[:, :, None]
            x = nn.relu(nn.Conv(self.width, (3,), 2, ((1, 1),), kernel_init=TORCH_KERNEL_INIT,
                                bias_init=torch_bias_init(fan_in), name=name)(x))
        return x


class FeedForward(nn.Module):
    """LayerNorm, 4x wider linear, SiLU, linear back, dropout."""

    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        width, wide = x.shape[-1], FEED_FORWARD_EXPANSION * x.shape[-1]
        y = nn.silu(dense(wide, width, "linear1")(layer_norm(name="ln")(x)))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(dense(width, wide, "linear2")(y))


class SelfAttention(nn.Module):
    """LayerNorm, multi-head self-attention with a fused `qkv` projection over the unpadded frames, dropout."""

    heads: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        batch, frames, width = x.shape
        qkv = dense(3 * width, width, "qkv")(layer_norm(name="ln")(x)).reshape(batch, frames, 3, self.heads, -1)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask[:, None, None, :] > 0)
        y = dense(width, width, "out")(y.reshape(batch, frames, width))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class DepthwiseConv(nn.Module):
    """Depthwise convolution over time (odd kernel, 'same' padding, no bias), y_t = Σ_k w_k x_{t+k−⌊K/2⌋}
    per channel, written as a sum of shifted products: `nn.Conv(feature_group_count=channels)` computes
    the same, but XLA's CPU backend runs it about 40x and its gradient about 10x slower (a NAdamW step
    of this model took 190 rather than 160 CPU-ms). Kernel (K, 1, channels), as nn.Conv's."""

    kernel_size: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", TORCH_KERNEL_INIT, (self.kernel_size, 1, x.shape[-1]))
        half = self.kernel_size // 2
        padded = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
        return sum(padded[:, k : k + x.shape[1]] * kernel[k, 0] for k in range(self.kernel_size))


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise linear with GLU, padded frames zeroed, depthwise convolution over time,
    LayerNorm, SiLU, pointwise linear, dropout."""

    dropout_rate: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        width = x.shape[-1]
        y = nn.glu(dense(2 * width, width, "pointwise1")(layer_norm(name="ln")(x)), axis=-1) * mask[:, :, None]
        y = DepthwiseConv(CONVOLUTION_KERNEL, name="depthwise")(y)
        y = dense(width, width, "pointwise2")(nn.silu(layer_norm(name="ln2")(y)))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class ConformerBlock(nn.Module):
    """x + ½ FF(x), + attention, + convolution, + ½ FF, then LayerNorm."""

    heads: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        rate = self.dropout_rate
        x = x + 0.5 * FeedForward(rate, name="ff1")(x, train)
        x = x + SelfAttention(self.heads, rate, name="attention")(x, mask, train)
        x = x + ConvolutionModule(rate, name="convolution")(x, mask, train)
        x = x + 0.5 * FeedForward(rate, name="ff2")(x, train)
        return layer_norm(name="ln")(x)


class Conformer(nn.Module):
    width: int = WIDTH
    depth: int = DEPTH
    heads: int = HEADS

    @nn.compact
    def __call__(self, inputs, train: bool, dropout_rate=None):
        """(features (batch, frames, mels), lengths) -> (logits (batch, frames', classes), paddings
        (batch, frames'): 1.0 on frames past an utterance's end), as AlgoPerf's model returns."""
        rate = 0.0 if dropout_rate is None else dropout_rate
        features, lengths = inputs
        x = Subsampling(self.width, name="subsampling")(features.astype(jnp.float32), lengths)
        mask = frame_mask(subsampled_lengths(lengths), x.shape[1])
        x = nn.Dropout(rate, deterministic=not train)(x + sinusoids(x.shape[1], x.shape[2]))
        for i in range(self.depth):
            x = ConformerBlock(self.heads, rate, name=f"blocks_{i}")(x, mask, train)
        return dense(NUM_CLASSES, self.width, "head")(layer_norm(name="ln")(x)), 1.0 - mask


def ctc_loss(logits: jax.Array, paddings: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-utterance CTC loss −log p(labels | logits) by `optax.ctc_loss` (blank 0; labels right-padded
    with 0), and 0 where no alignment exists (frames < labels + adjacent repeats), as torch's
    `F.ctc_loss(zero_infinity=True)`."""
    valid = labels > 0
    nll = optax.ctc_loss(logits, paddings, labels, 1.0 - valid.astype(jnp.float32), blank_id=0)
    repeats = (valid[:, 1:] & (labels[:, 1:] == labels[:, :-1])).sum(1)
    feasible = (1.0 - paddings).sum(1) >= valid.sum(1) + repeats
    return jnp.where(feasible, nll, 0.0)


def sample_ctc_labels(logits: jax.Array, paddings: jax.Array, key: jax.Array) -> jax.Array:
    """Label sequences drawn from the model's CTC distribution p(y | x): a class per frame from its
    softmax, repeats collapsed, blanks and padded frames dropped (torch.py's `sample_ctc_labels`).
    Zero-padded like the targets, to the frame count: a static shape."""
    path = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1) * (paddings == 0)
    first = jnp.concatenate([jnp.ones_like(path[:, :1], dtype=bool), path[:, 1:] != path[:, :-1]], axis=1)
    keep = first & (path != 0)
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, path.shape[1])  # past the end: dropped
    return jnp.zeros_like(path).at[jnp.arange(len(path))[:, None], slot].set(path, mode="drop")


class Workload(EspeakSpeechWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return Conformer()

    def init_model_fn(self, rng: spec.RandomState):
        params, model_state = super().init_model_fn(rng)
        self._param_types = with_fused_attention_types(self._param_types)
        return params, model_state

    def model_inputs(self, batch: dict):
        """(features, lengths); the model's output is the pair (logits, logit_paddings)."""
        return batch["inputs"], batch["input_lengths"]

    def to_device(self, batch: dict) -> dict:
        """The batch on the device, in one of a few shapes (`static_shapes`)."""
        if "input_lengths" in batch:
            batch = static_shapes(batch, FRAME_MULTIPLE, LABEL_MULTIPLE)
        return super().to_device(batch)

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing: float = 0.0) -> dict:
        """CTC loss summed over utterances; `n_valid_examples` counts target characters, as in AlgoPerf's
        librispeech workloads (so the mean is per character). Label smoothing does not apply to CTC."""
        del label_smoothing
        logits, paddings = logits_batch
        per_example = ctc_loss(logits.astype(jnp.float32), paddings, label_batch)
        weights = (label_batch > 0).sum(1).astype(per_example.dtype)
        if mask_batch is not None:
            per_example, weights = per_example * mask_batch, weights * mask_batch
        return {"summed": per_example.sum(), "n_valid_examples": jnp.maximum(weights.sum(), 1.0),
                "per_example": per_example}

    def sample_labels(self, logits_batch: tuple[jax.Array, jax.Array], key: jax.Array) -> jax.Array:
        """Targets sampled from the model's own predictive distribution (for Gauss-Newton-Bartlett
        curvature estimates such as Sophia-G's): `sample_ctc_labels`."""
        return sample_ctc_labels(*logits_batch, key)

    # ----- evaluation: the loss and best paths compiled with the forward pass, word errors on the host -----
    def _device_sums(self, logits, targets) -> dict:
        loss = self.loss_fn(targets, logits)
        scores, paddings = logits
        return {"loss": loss["summed"], "characters": loss["n_valid_examples"],
                "best_classes": scores.argmax(-1), "frames": (1.0 - paddings).sum(1).astype(jnp.int32)}

    def _eval_step_sums(self, params, model_state, batch):  # compiled once per batch shape by JaxWorkload
        logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, None, False)
        return self._device_sums(logits, batch["targets"])

    def _with_word_errors(self, sums: dict, batch: dict) -> dict:
        """`sums` with the best paths replaced by the word errors of their greedy decoding, and the words."""
        best_classes, frames = self.to_host((sums.pop("best_classes"), sums.pop("frames")))
        references = batch.get("references") or [data.decode(row) for row in np.asarray(batch["targets"])]
        errors, words = word_errors(references, greedy_texts(best_classes, frames))
        return {**sums, "word_errors": float(errors), "words": float(words)}

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        arrays = {key: value for key, value in batch.items() if key != "references"}
        return self._with_word_errors(self._eval_step(params, model_state, arrays), batch)

    def eval_sums(self, logits, batch) -> dict:
        """CTC loss, target characters, word errors and reference words of a batch's logits (not compiled)."""
        return self._with_word_errors(self._device_sums(logits, batch["targets"]), batch)
