"""The wmt Transformer of `torch.py` in Flax Linen, and the workload's JAX side: AlgoPerf's model
(algoperf/workloads/wmt/wmt_jax/models.py) with torch.py's layer names and shapes, so that one set of
weights runs in both frameworks. Same maths (see torch.py's docstring): shared N(0, 1) embedding, logits
LN(y) Eᵀ / √width, fixed sinusoidal positions (looked up at the packed `*_position` keys), pre-LayerNorm
blocks with ε 1e-6 (variance computed as torch does), bias-free attention projections (self-attention's
fused `qkv`, cross-attention's `q` and fused `kv`), each width × width projection Xavier-uniform on its
own, a ReLU MLP with N(0, 1e-6²) biases, padding / causal / packed-pair masks (a padding query attends
to every key), the decoder's input the whole row shifted right (AlgoPerf's `shift_right`), and dropout on
embeddings + positions, attention outputs, MLP hidden units and MLP outputs (AlgoPerf's JAX places; none
on attention weights).

Two layout changes from AlgoPerf's JAX model, neither changing the function: attention projections are
Dense kernels (width, parts · width) rather than DenseGeneral kernels (width, heads, head width) per
query, key and value (so the parameter types are ATTENTION_QKV / ATTENTION_Q / ATTENTION_KV /
ATTENTION_OUT, as AlgoPerf's PyTorch model's); the encoder output's keys and values are computed once per
translation, not at every decoding step.

Evaluation batches have one shape ([eval_batch_size, 256]: workload.py pads the last batch with empty
rows), so the teacher-forced evaluation step compiles once per workload object and the beam-search
translation (`translate`, jitted at module level with the model static, `harness.backends.jax.beam_search`:
one `lax.while_loop`) once per process.

    python submit.py --framework jax --workload wmt --submission nadamw --data_dir <dir>
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from harness import spec
from harness.backends.jax.attention import EncoderDecoderAttention, xavier_dense
from harness.backends.jax.beam_search import beam_search
from harness.backends.jax.layers import dropout, torch_layer_norm, with_encoder_decoder_types
from harness.backends.jax.workload import JaxWorkload
from workloads.wmt.data import EOS_ID, PAD_ID
from workloads.wmt.workload import BEAM_SIZE, BREVITY_ALPHA, MAX_DECODE_LENGTH, TransformerConfig, WmtWorkload


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    """(length, width): sines in the first half, cosines in the second, as torch.py's."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    frequency = jnp.exp(jnp.arange(width // 2) * (-math.log(10_000.0) / (width // 2 - 1)))
    return jnp.concatenate((jnp.sin(position * frequency), jnp.cos(position * frequency)), axis=1)


def shift_right(targets: jax.Array) -> jax.Array:
    """The decoder's input: the row shifted right by one, PAD_ID (the start token) first."""
    return jnp.pad(targets[:, :-1], ((0, 0), (1, 0)), constant_values=PAD_ID)


def attention_mask(query_tokens, key_tokens, query_segments=None, key_segments=None, causal: bool = False):
    """(B, 1, queries, keys), or (B, 1, 1, keys) without `query_tokens`: True where a query may attend a
    key, as torch.py's `attention_mask`."""
    keep = (key_tokens != PAD_ID)[:, None, None, :]
    if query_segments is not None:
        keep = keep & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
    if causal:
        keep = keep & jnp.tril(jnp.ones((key_tokens.shape[1],) * 2, bool))
    if query_tokens is not None:
        keep = keep | (query_tokens == PAD_ID)[:, None, :, None]
    return keep


class Block(nn.Module):
    """What encoder and decoder blocks share: the ReLU MLP, `mlp_0` and `mlp_3` as torch's `mlp.0`, `mlp.3`
    (Linear, ReLU, Dropout, Linear)."""

    config: TransformerConfig

    def setup(self) -> None:
        self.mlp_0, self.mlp_3 = xavier_dense(self.config.mlp_width, True), xavier_dense(self.config.width, True)

    def mlp(self, x, train: bool, rate: float):
        return self.mlp_3(dropout(self, nn.relu(self.mlp_0(x)), rate, train))

    def layer_norm(self) -> nn.LayerNorm:
        return torch_layer_norm(self.config.layer_norm_eps)()


class EncoderBlock(Block):
    """x + Attn(LN x), then x + MLP(LN x)."""

    def setup(self) -> None:
        super().setup()
        self.ln1, self.ln2 = self.layer_norm(), self.layer_norm()
        self.attention = EncoderDecoderAttention(self.config.width, self.config.heads, cross=False)

    def __call__(self, x, mask, train: bool, rate: float):
        x = x + dropout(self, self.attention.attend(*self.attention.self_qkv(self.ln1(x)), mask), rate, train)
        return x + dropout(self, self.mlp(self.ln2(x), train, rate), rate, train)


class DecoderBlock(Block):
    """x + causal self-attention(LN x), x + attention over the encoder output(LN x), x + MLP(LN x)."""

    def setup(self) -> None:
        super().setup()
        self.ln1, self.ln2, self.ln3 = self.layer_norm(), self.layer_norm(), self.layer_norm()
        self.self_attention = EncoderDecoderAttention(self.config.width, self.config.heads, cross=False)
        self.cross_attention = EncoderDecoderAttention(self.config.width, self.config.heads, cross=True)

    def __call__(self, x, memory_kv, memory_mask, self_mask, train: bool, rate: float):
        """All target positions at once (teacher forcing)."""
        attended = self.self_attention.attend(*self.self_attention.self_qkv(self.ln1(x)), self_mask)
        x = x + dropout(self, attended, rate, train)
        return self._attend_memory_and_mlp(x, memory_kv, memory_mask, train, rate)

    def decode_step(self, x, memory_kv, memory_mask, cache: tuple, index):
        """x (N, 1, W) at position `index`, N a multiple of the encoder output's rows B (a source's rows
        side by side: beams); `cache` holds the keys and values (N, length, heads, head width), attention
        reads positions 0..index. Returns the block's output and the cache with this position's keys
        and values. Attention over the encoder output takes a source's N / B rows as N / B queries."""
        q, k, v = self.self_attention.self_qkv(self.ln1(x))
        cache = tuple(jax.lax.dynamic_update_slice_in_dim(c, new, index, axis=1) for c, new in zip(cache, (k, v)))
        x = x + self.self_attention.attend(q, *cache, jnp.arange(cache[0].shape[1]) <= index)
        grouped = x.reshape(memory_kv[0].shape[0], -1, x.shape[-1])  # (B, N / B, W)
        return self._attend_memory_and_mlp(grouped, memory_kv, memory_mask, False, 0.0).reshape(x.shape), cache

    def _attend_memory_and_mlp(self, x, memory_kv, memory_mask, train: bool, rate: float):
        q = self.cross_attention.query(self.ln2(x))
        x = x + dropout(self, self.cross_attention.attend(q, *memory_kv, memory_mask), rate, train)
        return x + dropout(self, self.mlp(self.ln3(x), train, rate), rate, train)


class Transformer(nn.Module):
    """AlgoPerf's wmt encoder-decoder Transformer (torch.py's `Transformer`)."""

    config: TransformerConfig

    def setup(self) -> None:
        config = self.config
        self.shared_embedding = nn.Embed(config.vocab_size, config.width, embedding_init=nn.initializers.normal(1.0))
        self.encoder = [EncoderBlock(config) for _ in range(config.encoder_layers)]
        self.encoder_ln = torch_layer_norm(config.layer_norm_eps)()
        self.decoder = [DecoderBlock(config) for _ in range(config.decoder_layers)]
        self.decoder_ln = torch_layer_norm(config.layer_norm_eps)()
        self.positions = sinusoidal_positions(config.max_length, config.width)

    def embed(self, tokens, positions):
        """Token embeddings plus the positions' sinusoids (positions 0, 1, ... when None)."""
        table = self.positions[: tokens.shape[1]] if positions is None else self.positions[positions]
        return self.shared_embedding(tokens) + table

    def logits(self, x):
        return self.shared_embedding.attend(self.decoder_ln(x)) / math.sqrt(self.config.width)

    def encode(self, inputs, positions=None, segments=None, train: bool = False, rate: float = 0.0):
        """The encoder's output (B, S, W)."""
        mask = attention_mask(inputs, inputs, segments, segments)
        x = dropout(self, self.embed(inputs, positions), rate, train)
        for block in self.encoder:
            x = block(x, mask, train, rate)
        return self.encoder_ln(x)

    def __call__(self, batch: dict, train: bool, dropout_rate=None):
        """Teacher-forced logits (B, T, vocabulary) of `batch['targets']` given `batch['inputs']` (and the
        packed keys when present); `dropout_rate` None is the configuration's."""
        rate = self.config.dropout_rate if dropout_rate is None else dropout_rate
        inputs, targets = batch["inputs"], batch["targets"]
        input_segments, target_segments = batch.get("inputs_segmentation"), batch.get("targets_segmentation")
        memory = self.encode(inputs, batch.get("inputs_position"), input_segments, train, rate)
        self_mask = attention_mask(targets, targets, target_segments, target_segments, causal=True)
        memory_mask = attention_mask(targets, inputs, target_segments, input_segments)
        x = dropout(self, self.embed(shift_right(targets), batch.get("targets_position")), rate, train)
        for block in self.decoder:
            x = block(x, block.cross_attention.memory_kv(memory), memory_mask, self_mask, train, rate)
        return self.logits(x)

    def start_decoding(self, inputs) -> tuple:
        """For each decoder block the encoder output's keys and values, and the source padding mask."""
        memory = self.encode(inputs)
        return [block.cross_attention.memory_kv(memory) for block in self.decoder], attention_mask(None, inputs)

    def decode_step(self, tokens, index, memory_kv, memory_mask, caches) -> tuple:
        """Logits (N, vocabulary) of the target token at position `index` from the decoder's input there,
        `tokens` (N,): the target token before it (PAD_ID at 0); and the updated caches. N is a multiple of
        the source rows (`DecoderBlock.decode_step`)."""
        x = self.shared_embedding(tokens)[:, None] + self.positions[index]
        new_caches = []
        for block, kv, cache in zip(self.decoder, memory_kv, caches):
            x, cache = block.decode_step(x, kv, memory_mask, cache, index)
            new_caches.append(cache)
        return self.logits(x)[:, 0], tuple(new_caches)


def empty_caches(config: TransformerConfig, rows: int, length: int) -> tuple:
    """Each decoder block's self-attention (keys, values), (rows, length, heads, head width), unwritten."""
    empty = jnp.zeros((rows, length, config.heads, config.width // config.heads), jnp.float32)
    return tuple((empty, empty) for _ in range(config.decoder_layers))


@partial(jax.jit, static_argnames=("model", "beam_size", "max_decode_len", "alpha"))
def translate(model: Transformer, params, inputs, beam_size: int = BEAM_SIZE,
              max_decode_len: int = MAX_DECODE_LENGTH, alpha: float = BREVITY_ALPHA) -> jax.Array:
    """Beam-search translations (B, max_decode_len) of `inputs` (B, S): token ids, PAD_ID after EOS.
    Compiled once per input shape in a process (equal models hash alike)."""
    variables = {"params": params}
    memory_kv, memory_mask = model.apply(variables, inputs, method=Transformer.start_decoding)

    def step(tokens, caches, index):
        return model.apply(variables, tokens, index, memory_kv, memory_mask, caches, method=Transformer.decode_step)

    caches = empty_caches(model.config, inputs.shape[0], max_decode_len)
    return beam_search(step, caches, inputs.shape[0], beam_size, EOS_ID, max_decode_len, alpha)


class WmtJaxWorkload(WmtWorkload, JaxWorkload):
    output_layer_name = "shared_embedding"  # the output layer is the shared embedding (AlgoPerf)

    def build_model(self) -> nn.Module:
        return Transformer(self.model_config)

    def model_inputs(self, batch: dict) -> dict:
        """The whole batch: the decoder reads the targets, and packed rows their positions and pairs."""
        return batch

    def init_model_fn(self, rng: spec.RandomState):
        params, model_state = super().init_model_fn(rng)
        self._param_types = with_encoder_decoder_types(self._param_types)
        return params, model_state

    def eval_sums(self, logits, batch) -> dict:
        """Teacher-forced sums over the batch's weighted tokens: cross-entropy (no label smoothing),
        correct argmaxes and tokens (AlgoPerf's eval_step)."""
        targets, weights = batch["targets"], batch["weights"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        loss = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        correct = (logits.argmax(-1) == targets).astype(weights.dtype)
        return {"loss": (loss * weights).sum(), "correct": (correct * weights).sum(), "tokens": weights.sum()}

    def translate(self, params, inputs) -> np.ndarray:
        return np.asarray(translate(self.model, params, inputs, max_decode_len=self.max_decode_length))


Workload = WmtJaxWorkload
