"""The encoder-decoder Transformer of `torch.py` in Flax Linen: the same layers, shapes and initial
distributions (the shared embedding N(0, 1/width), scaled by √width at the input and used as the output
layer, logits = x Eᵀ; bias-free attention projections and MLP kernels Xavier-uniform, MLP biases
N(0, 1e-6²); LayerNorm ε 1e-6 with the variance computed as torch does; attention scaled by
1/√head_width as `F.scaled_dot_product_attention`), the same fixed sinusoidal positions, and dropout
(rate 0 unless `dropout_rate` says otherwise) at the same places, attention weights included; only
the dropout masks, drawn from JAX's keys, differ from torch's.

Static shapes: `jax.jit` compiles once per shape, and batches are cut to their longest pair
(`workload.trim`), so the JAX workload pads each batch's inputs and targets (PAD_ID, weight 0) to one
length, the longer side's rounded up to a multiple of LENGTH_BUCKET. Padded source positions are masked
out of attention, padded target positions come after every real one (causal attention never reads
them) and weigh 0 in the loss and the metrics, so the padding changes no value. The training step, the
evaluation's forward pass and the greedy decoder each compile at most MAX_LENGTH / LENGTH_BUCKET = 4
times per batch size (3 in 3,000 training batches of 8, and of 32: none was 16 pieces long or shorter).

Evaluation decodes greedily as torch's `greedy_decode`: one compiled `jax.lax.while_loop` of at most
MAX_LENGTH steps that stops when every row has emitted EOS, with the decoder's keys and values kept in
a preallocated cache (positions after the current one masked out); rows that have finished emit PAD_ID.

    python submit.py --framework jax --workload bible_translation --submission nadamw
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from harness import spec
from harness.backends.jax.attention import EncoderDecoderAttention
from harness.backends.jax.layers import dropout, torch_layer_norm, with_encoder_decoder_types
from harness.backends.jax.workload import JaxWorkload
from harness.bleu import bleu_statistics
from workloads.bible_translation import data
from workloads.bible_translation.workload import (
    DECODER_LAYERS, ENCODER_LAYERS, HEADS, LAYER_NORM_EPS, MLP_WIDTH, WIDTH, BibleTranslationWorkload)

# Both sides are padded to the longer one's length rounded up to a multiple of this. On a 2-core CPU a
# NAdamW step on 8 pairs compiles in about 4 s of CPU time, inside the timed budget, and then takes 21 /
# 30 / 58 ms padded to 32 / 48 / 64; of 3,000 batches of 8, 30 % / 39 % / 30 % are padded to 32 / 48 / 64:
# 3 compilations and about 35 ms a step on average. Each side padded to a multiple of 16 on its own costs
# the same per step but compiles 9 times; a multiple of 32, 4 times and about 45 ms a step.
LENGTH_BUCKET = 16
layer_norm = torch_layer_norm(LAYER_NORM_EPS)
dense = partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6))


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    """(length, width): sines in the first half, cosines in the second, as torch.py's."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    frequency = jnp.exp(jnp.arange(width // 2) * (-math.log(10_000.0) / (width // 2 - 1)))
    return jnp.concatenate((jnp.sin(position * frequency), jnp.cos(position * frequency)), axis=1)


class Block(nn.Module):
    """What encoder and decoder blocks share: the ReLU MLP, `mlp_0` and `mlp_3` as torch's `mlp.0`, `mlp.3`
    (Linear, ReLU, Dropout, Linear)."""

    def setup(self) -> None:
        self.mlp_0, self.mlp_3 = dense(MLP_WIDTH), dense(WIDTH)

    def mlp(self, x, train: bool, rate: float):
        return self.mlp_3(dropout(self, nn.relu(self.mlp_0(x)), rate, train))


class EncoderBlock(Block):
    """x + attention(LN(x)), then x + MLP(LN(x))."""

    def setup(self) -> None:
        super().setup()
        self.ln1, self.ln2 = layer_norm(), layer_norm()
        self.attention = EncoderDecoderAttention(WIDTH, HEADS, cross=False, xavier_per_part=False)

    def __call__(self, x, source_mask, train: bool, rate: float):
        attended = self.attention.attend(*self.attention.self_qkv(self.ln1(x)), source_mask, train, rate)
        x = x + dropout(self, attended, rate, train)
        return x + dropout(self, self.mlp(self.ln2(x), train, rate), rate, train)


class DecoderBlock(Block):
    """x + causal self-attention(LN(x)), x + attention over the encoder output(LN(x)), x + MLP(LN(x))."""

    def setup(self) -> None:
        super().setup()
        self.ln1, self.ln2, self.ln3 = layer_norm(), layer_norm(), layer_norm()
        self.self_attention = EncoderDecoderAttention(WIDTH, HEADS, cross=False, xavier_per_part=False)
        self.cross_attention = EncoderDecoderAttention(WIDTH, HEADS, cross=True, xavier_per_part=False)

    def __call__(self, x, memory_kv, source_mask, train: bool, rate: float):
        """All target positions at once (teacher forcing)."""
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        attended = self.self_attention.attend(*self.self_attention.self_qkv(self.ln1(x)), causal, train, rate)
        x = x + dropout(self, attended, rate, train)
        return self._attend_memory_and_mlp(x, memory_kv, source_mask, train, rate)

    def decode_step(self, x, memory_kv, source_mask, cache: tuple, position):
        """x (B, 1, W) at `position`; `cache` holds the keys and values (B, MAX_LENGTH, heads, head
        width) of the earlier positions. Returns the block's output and the cache with this position's."""
        q, k, v = self.self_attention.self_qkv(self.ln1(x))
        cache = tuple(jax.lax.dynamic_update_slice_in_dim(c, new, position, axis=1) for c, new in zip(cache, (k, v)))
        x = x + self.self_attention.attend(q, *cache, jnp.arange(cache[0].shape[1]) <= position)
        return self._attend_memory_and_mlp(x, memory_kv, source_mask, False, 0.0), cache

    def _attend_memory_and_mlp(self, x, memory_kv, source_mask, train: bool, rate: float):
        q = self.cross_attention.query(self.ln2(x))
        x = x + dropout(self, self.cross_attention.attend(q, *memory_kv, source_mask, train, rate), rate, train)
        return x + dropout(self, self.mlp(self.ln3(x), train, rate), rate, train)


class Transformer(nn.Module):
    def setup(self) -> None:
        self.shared_embedding = nn.Embed(data.VOCABULARY_SIZE, WIDTH,
                                         embedding_init=nn.initializers.normal(WIDTH**-0.5))
        self.encoder = [EncoderBlock() for _ in range(ENCODER_LAYERS)]
        self.encoder_ln = layer_norm()
        self.decoder = [DecoderBlock() for _ in range(DECODER_LAYERS)]
        self.decoder_ln = layer_norm()
        self.positions = sinusoidal_positions(data.MAX_LENGTH, WIDTH)

    def embed(self, tokens):
        return self.shared_embedding(tokens) * math.sqrt(WIDTH)

    def logits(self, x):
        return self.shared_embedding.attend(self.decoder_ln(x))

    def encode(self, source, train: bool = False, rate: float = 0.0) -> tuple:
        """Encoder output (B, S, W) and the key mask (B, 1, 1, S) that hides source padding."""
        mask = (source != data.PAD_ID)[:, None, None, :]
        x = dropout(self, self.embed(source) + self.positions[: source.shape[1]], rate, train)
        for block in self.encoder:
            x = block(x, mask, train, rate)
        return self.encoder_ln(x), mask

    def __call__(self, batch: dict, train: bool, dropout_rate=None):
        """Teacher-forced logits (B, T, vocabulary) of `batch['targets']` given `batch['inputs']`."""
        rate = 0.0 if dropout_rate is None else dropout_rate
        memory, mask = self.encode(batch["inputs"], train, rate)
        targets = batch["targets"]
        shifted = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)), constant_values=data.PAD_ID)  # the start token is PAD_ID
        x = dropout(self, self.embed(shifted) + self.positions[: targets.shape[1]], rate, train)
        for block in self.decoder:
            x = block(x, block.cross_attention.memory_kv(memory), mask, train, rate)
        return self.logits(x)

    def start_decoding(self, source) -> tuple:
        """The encoder output's keys and values for each decoder block, and the source mask."""
        memory, mask = self.encode(source)
        return [block.cross_attention.memory_kv(memory) for block in self.decoder], mask

    def decode_step(self, token, position, memory_kv, mask, caches: list) -> tuple:
        """Logits (B, vocabulary) of the position after `token` (B,) at `position`, and the updated caches."""
        x = self.embed(token[:, None]) + jax.lax.dynamic_slice_in_dim(self.positions, position, 1)
        new_caches = []
        for block, kv, cache in zip(self.decoder, memory_kv, caches):
            x, cache = block.decode_step(x, kv, mask, cache, position)
            new_caches.append(cache)
        return self.logits(x)[:, 0], new_caches


@partial(jax.jit, static_argnames=("model", "max_length"))
def greedy_decode(model: Transformer, params, source, max_length: int = data.MAX_LENGTH) -> jax.Array:
    """Greedy translations (B, max_length): token ids, PAD_ID after each row's EOS. Compiled once per
    source shape in a process (equal models hash alike), not once per workload object."""
    variables = {"params": params}
    memory_kv, mask = model.apply(variables, source, method=Transformer.start_decoding)
    batch = source.shape[0]
    empty = jnp.zeros((batch, max_length, HEADS, WIDTH // HEADS), memory_kv[0][0].dtype)
    caches = [(empty, empty) for _ in memory_kv]

    def unfinished(state) -> jax.Array:
        position, _, done, _, _ = state
        return (position < max_length) & ~done.all()

    def step(state) -> tuple:
        position, token, done, tokens, caches = state
        logits, caches = model.apply(variables, token, position, memory_kv, mask, caches,
                                     method=Transformer.decode_step)
        token = jnp.where(done, data.PAD_ID, logits.argmax(-1))
        return position + 1, token, done | (token == data.EOS_ID), tokens.at[:, position].set(token), caches

    start = jnp.full((batch,), data.PAD_ID, jnp.int32)  # the start token is PAD_ID
    state = (0, start, jnp.zeros(batch, bool), jnp.full((batch, max_length), data.PAD_ID, jnp.int32), caches)
    return jax.lax.while_loop(unfinished, step, state)[3]


def pad_to_bucket(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with `inputs`, `targets` and `weights` padded (PAD_ID, weight 0) to one length: the
    longer side's, rounded up to a multiple of LENGTH_BUCKET."""
    longer = max(batch["inputs"].shape[1], batch["targets"].shape[1])
    length = -(-longer // LENGTH_BUCKET) * LENGTH_BUCKET
    padding = {"inputs": data.PAD_ID, "targets": data.PAD_ID, "weights": 0.0}
    return {key: np.pad(value, ((0, 0), (0, length - value.shape[1])), constant_values=padding[key])
            if key in padding else value for key, value in batch.items()}


class Workload(BibleTranslationWorkload, JaxWorkload):
    output_layer_name = "shared_embedding"  # the output layer is the shared embedding, as in AlgoPerf's wmt

    def build_model(self) -> nn.Module:
        return Transformer()

    def host_batch(self, split: str, index) -> dict[str, np.ndarray]:
        """The pairs `index` cut to their longest pair (`workload.trim`), then padded to LENGTH_BUCKET."""
        return pad_to_bucket(super().host_batch(split, index))

    def init_model_fn(self, rng: spec.RandomState):
        params, model_state = super().init_model_fn(rng)
        self._param_types = with_encoder_decoder_types(self._param_types)
        return params, model_state

    def model_inputs(self, batch: dict) -> dict:
        """Inputs and targets: the decoder reads the targets shifted right (teacher forcing)."""
        return {"inputs": batch["inputs"], "targets": batch["targets"]}

    def eval_sums(self, logits, batch) -> dict:
        targets, weights = batch["targets"], batch["weights"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        loss = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        correct = (logits.argmax(-1) == targets).astype(weights.dtype)
        return {"loss": (loss * weights).sum(), "correct": (correct * weights).sum(), "tokens": weights.sum()}

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        """Teacher-forced loss and accuracy sums and, except on 'eval_train' (kept cheap), the BLEU
        statistics of the batch's greedy translations."""
        arrays = {key: batch[key] for key in ("inputs", "targets", "weights")}  # not the references: no arrays
        batch_sums = super().eval_batch_sums(split, params, model_state, rng, arrays)
        if split != "eval_train":
            hypotheses = self.detokenize(np.asarray(greedy_decode(self.model, params, batch["inputs"])))
            batch_sums.update(bleu_statistics(hypotheses, batch["references"]))
        return batch_sums
