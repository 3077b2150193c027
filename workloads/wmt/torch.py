"""AlgoPerf's wmt Transformer in PyTorch (algoperf/workloads/wmt/wmt_pytorch/models.py and
wmt_jax/models.py, from the flax wmt example, after Vaswani et al., 2017) and the workload's PyTorch side.

The model, for a `TransformerConfig` (workload.py; AlgoPerf's sizes, ALGOPERF_CONFIG, give 133,521,408
parameters):
- one embedding E (vocabulary × width, N(0, 1)) for the encoder's input, the decoder's input and the
  output: logits = LN(y) Eᵀ / √width; the embeddings are not scaled at the input;
- fixed sinusoidal positions P[p, i] = sin(p f_i) for i < width/2, cos(p f_(i − width/2)) after, with
  f_i = 10000^(−i / (width/2 − 1)), looked up at the packed `*_position` keys when the batch has them;
- pre-LayerNorm blocks (ε 1e-6) and a final LayerNorm on each side: an encoder block is x + Attn(LN x),
  then x + MLP(LN x); a decoder block has causal self-attention, then attention over the encoder output;
- attention softmax(q kᵀ / √head_width + mask) v, projections without biases (self-attention fuses q, k, v
  in `qkv`; attention over the encoder output has `q` and a fused `kv`), every width × width projection
  Xavier-uniform on its own, U(±√(3 / width)), as the JAX model's separate query, key, value and output
  kernels (AlgoPerf's PyTorch model draws each fused matrix as one, with a smaller bound);
- a ReLU MLP width → mlp_width → width with biases; MLP kernels Xavier-uniform, biases N(0, 1e-6²);
- masks: a key is hidden where its token is padding (id 0), in decoder self-attention when it comes
  later (causal), and in packed rows when it belongs to another pair (`*_segmentation` differ); a
  padding query attends to every key (AlgoPerf's to none; its output counts nowhere either way);
- the decoder reads the targets shifted right by one along the whole row, 0 first, as both AlgoPerf
  models' `shift_right`: in a packed row each pair after the first starts from the previous pair's EOS;
- dropout (`dropout_rate`, AlgoPerf's 0.1 unless model_fn says otherwise) on embeddings + positions,
  on each attention output, on the MLP's hidden units and on its output: the places of AlgoPerf's JAX
  model. AlgoPerf's PyTorch model also drops attention weights inside scaled_dot_product_attention;
  this one does not, so that the PyTorch and JAX workloads train the same function.

Evaluation translates with beam search (`harness.backends.torch.beam_search`; beam 4, alpha 0.6, up to
256 tokens: AlgoPerf's predict_step): the encoder runs once, the decoder one position at a time with its
self-attention keys and values cached; the encoder output's keys and values are computed once and
shared by a row's beams.

    python submit.py --workload wmt --submission nadamw --data_dir <dir>
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.attention import EncoderDecoderAttention, xavier_linear
from harness.backends.torch.beam_search import beam_search
from harness.backends.torch.workload import TorchWorkload
from workloads.wmt.data import EOS_ID, PAD_ID
from workloads.wmt.workload import BEAM_SIZE, BREVITY_ALPHA, MAX_DECODE_LENGTH, TransformerConfig, WmtWorkload


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width): sines in the first half, cosines in the second (AlgoPerf's PositionalEncoding)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(width // 2) * (-math.log(10_000.0) / (width // 2 - 1)))
    return torch.cat((torch.sin(position * frequency), torch.cos(position * frequency)), dim=1)


def shift_right(targets: torch.Tensor) -> torch.Tensor:
    """The decoder's input: the row shifted right by one, PAD_ID (the start token) first."""
    return F.pad(targets[:, :-1], (1, 0), value=PAD_ID)


def attention_mask(query_tokens: torch.Tensor | None, key_tokens: torch.Tensor,
                   query_segments: torch.Tensor | None = None, key_segments: torch.Tensor | None = None,
                   causal: bool = False) -> torch.Tensor:
    """Additive float32 mask (B, 1, queries, keys), or (B, 1, 1, keys) without `query_tokens`: 0 where a
    query may attend a key, float32's lowest value where the key is padding, comes later (`causal`) or
    belongs to another pair (segments differ), as AlgoPerf's masks. A padding query (in `query_tokens`)
    attends to every key instead of none: its output reaches nothing that counts (padding keys are
    hidden, padding targets weigh 0), and no softmax row is all hidden (the gradient of such a row is not
    the same in torch and JAX). Without `query_tokens` an empty source row (decoding) is all hidden:
    finite, so its weights are uniform, not NaN."""
    keep = (key_tokens != PAD_ID)[:, None, None, :]
    if query_segments is not None:
        keep = keep & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
    if causal:
        length = key_tokens.shape[1]
        keep = keep & torch.ones(length, length, dtype=torch.bool, device=keep.device).tril()
    if query_tokens is not None:
        keep = keep | (query_tokens == PAD_ID)[:, None, :, None]
    return torch.zeros(keep.shape, device=keep.device).masked_fill(~keep, torch.finfo(torch.float32).min)


class Block(nn.Module):
    """What encoder and decoder blocks share: the ReLU MLP `mlp` (Linear, ReLU, Dropout, Linear) and the
    dropout on the residual branches."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        width, hidden, rate = config.width, config.mlp_width, config.dropout_rate
        self.mlp = nn.Sequential(xavier_linear(width, hidden, True), nn.ReLU(), nn.Dropout(rate),
                                 xavier_linear(hidden, width, True))
        self.dropout = nn.Dropout(rate)

    def layer_norm(self, config: TransformerConfig) -> nn.LayerNorm:
        return nn.LayerNorm(config.width, eps=config.layer_norm_eps)


class EncoderBlock(Block):
    """x + Attn(LN x), then x + MLP(LN x)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.ln1, self.ln2 = self.layer_norm(config), self.layer_norm(config)
        self.attention = EncoderDecoderAttention(config.width, config.heads, cross=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention.attend(*self.attention.self_qkv(self.ln1(x)), mask))
        return x + self.dropout(self.mlp(self.ln2(x)))


class DecoderBlock(Block):
    """x + causal self-attention(LN x), x + attention over the encoder output(LN x), x + MLP(LN x)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.ln1, self.ln2, self.ln3 = (self.layer_norm(config) for _ in range(3))
        self.self_attention = EncoderDecoderAttention(config.width, config.heads, cross=False)
        self.cross_attention = EncoderDecoderAttention(config.width, config.heads, cross=True)

    def forward(self, x, memory_kv, memory_mask, self_mask) -> torch.Tensor:
        """All target positions at once (teacher forcing)."""
        x = x + self.dropout(self.self_attention.attend(*self.self_attention.self_qkv(self.ln1(x)), self_mask))
        return self._attend_memory_and_mlp(x, memory_kv, memory_mask)

    def decode_step(self, x, memory_kv, memory_mask, cache: tuple, index: int) -> torch.Tensor:
        """x (N, 1, W) at position `index`, where N is a multiple of the encoder output's rows B: the rows
        of one source side by side ([b0, b0, ..., b1, ...], beams). This position's keys and values are
        written into `cache` (N, heads, length, head width) in place, and attention reads positions
        0..index. Attention over the encoder output takes a source's N / B rows as N / B queries."""
        q, k, v = self.self_attention.self_qkv(self.ln1(x))
        keys, values = cache
        keys[:, :, index : index + 1], values[:, :, index : index + 1] = k, v
        x = x + self.dropout(self.self_attention.attend(q, keys[:, :, : index + 1], values[:, :, : index + 1]))
        grouped = x.reshape(memory_kv[0].shape[0], -1, x.shape[-1])  # (B, N / B, W)
        return self._attend_memory_and_mlp(grouped, memory_kv, memory_mask).reshape(x.shape)

    def _attend_memory_and_mlp(self, x, memory_kv, memory_mask) -> torch.Tensor:
        q = self.cross_attention.query(self.ln2(x))
        x = x + self.dropout(self.cross_attention.attend(q, *memory_kv, memory_mask))
        return x + self.dropout(self.mlp(self.ln3(x)))


class Transformer(nn.Module):
    """AlgoPerf's wmt encoder-decoder Transformer (see the module docstring)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.shared_embedding = nn.Embedding(config.vocab_size, config.width)  # N(0, 1), torch's default
        self.register_buffer("positions", sinusoidal_positions(config.max_length, config.width), persistent=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.encoder_ln = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.decoder_ln = nn.LayerNorm(config.width, eps=config.layer_norm_eps)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings plus the positions' sinusoids (positions 0, 1, ... when None)."""
        table = self.positions[: tokens.shape[1]] if positions is None else self.positions[positions]
        return self.shared_embedding(tokens) + table

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_ln(x) @ self.shared_embedding.weight.T / math.sqrt(self.config.width)

    def encode(self, inputs: torch.Tensor, positions=None, segments=None) -> torch.Tensor:
        """The encoder's output (B, S, W)."""
        mask = attention_mask(inputs, inputs, segments, segments)
        x = self.dropout(self.embed(inputs, positions))
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_ln(x)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocabulary) of `batch['targets']` given `batch['inputs']`; packed
        rows also give `inputs_position`, `targets_position`, `inputs_segmentation`, `targets_segmentation`."""
        inputs, targets = batch["inputs"], batch["targets"]
        input_segments, target_segments = batch.get("inputs_segmentation"), batch.get("targets_segmentation")
        memory = self.encode(inputs, batch.get("inputs_position"), input_segments)
        self_mask = attention_mask(targets, targets, target_segments, target_segments, causal=True)
        memory_mask = attention_mask(targets, inputs, target_segments, input_segments)
        x = self.dropout(self.embed(shift_right(targets), batch.get("targets_position")))
        for block in self.decoder:
            x = block(x, block.cross_attention.memory_kv(memory), memory_mask, self_mask)
        return self.logits(x)

    def start_decoding(self, inputs: torch.Tensor) -> tuple[list, torch.Tensor]:
        """For each decoder block the encoder output's keys and values, and the source padding mask."""
        memory = self.encode(inputs)
        return [block.cross_attention.memory_kv(memory) for block in self.decoder], attention_mask(None, inputs)

    def empty_caches(self, rows: int, length: int) -> tuple:
        """Each decoder block's self-attention (keys, values), (rows, heads, length, head width), unwritten."""
        heads = self.config.heads
        shape = (rows, heads, length, self.config.width // heads)
        device = self.shared_embedding.weight.device
        return tuple((torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in self.decoder)

    def decode_step(self, tokens: torch.Tensor, index: int, memory_kv: list, memory_mask: torch.Tensor,
                    caches: tuple) -> tuple[torch.Tensor, tuple]:
        """Logits (N, vocabulary) of the target token at position `index` from the decoder's input there,
        `tokens` (N,): the target token before it (PAD_ID at 0). N is a multiple of the source rows
        (`DecoderBlock.decode_step`); the caches are updated in place."""
        x = self.shared_embedding(tokens)[:, None] + self.positions[index]
        for block, kv, cache in zip(self.decoder, memory_kv, caches):
            x = block.decode_step(x, kv, memory_mask, cache, index)
        return self.logits(x)[:, 0], caches


@torch.no_grad()
def translate(model: Transformer, inputs: torch.Tensor, beam_size: int = BEAM_SIZE,
              max_decode_len: int = MAX_DECODE_LENGTH, alpha: float = BREVITY_ALPHA) -> torch.Tensor:
    """Beam-search translations (B, max_decode_len) of `inputs` (B, S): token ids, PAD_ID after EOS. Puts
    the model in evaluation mode."""
    model.eval()
    memory_kv, memory_mask = model.start_decoding(inputs)

    def step(tokens, caches, index):
        return model.decode_step(tokens, index, memory_kv, memory_mask, caches)

    return beam_search(step, model.empty_caches(len(inputs), max_decode_len), len(inputs), beam_size, EOS_ID,
                       max_decode_len, alpha)


class WmtTorchWorkload(WmtWorkload, TorchWorkload):
    output_layer_name = "shared_embedding"  # the output layer is the shared embedding (AlgoPerf)

    def build_model(self) -> nn.Module:
        return Transformer(self.model_config)

    def to_device(self, batch: dict) -> dict:
        """Integer arrays as int64 tensors (torch's losses take int64 labels), as AlgoPerf's PyTorch
        input pipeline gives every wmt key."""
        def widened(value):
            is_integer = isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer)
            return value.astype(np.int64) if is_integer else value

        return super().to_device({key: widened(value) for key, value in batch.items()})

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole batch: the decoder reads the targets, and packed rows their positions and pairs."""
        return batch

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Teacher-forced sums over the batch's weighted tokens: cross-entropy (no label smoothing),
        correct argmaxes and tokens (AlgoPerf's eval_step)."""
        targets, weights = batch["targets"], batch["weights"]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        correct = (logits.argmax(-1) == targets).float()
        return {"loss": (loss * weights.flatten()).sum(), "correct": (correct * weights).sum(), "tokens": weights.sum()}

    def translate(self, params: Transformer, inputs: torch.Tensor) -> np.ndarray:
        return translate(params, inputs, max_decode_len=self.max_decode_length).cpu().numpy()


Workload = WmtTorchWorkload
