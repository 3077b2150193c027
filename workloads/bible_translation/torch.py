"""A small encoder-decoder Transformer shaped like AlgoPerf's wmt model (algoperf/workloads/wmt/
wmt_pytorch/models.py, after Vaswani et al., 2017): pre-LayerNorm blocks with a final LayerNorm on each
side, one embedding shared by the encoder input, the decoder input and the output layer, fixed
sinusoidal positions (sines then cosines), bias-free attention projections, a ReLU MLP as wide as the
model, dropout on embeddings, residual branches, MLP hidden units and attention weights, Xavier-uniform
kernels. Evaluation translates greedily with cached keys and values.

One change from AlgoPerf: the embedding is initialised N(0, 1/width) and multiplied by sqrt(width) at
the input, and the logits are x E^T (Vaswani et al., 2017, section 3.4), where AlgoPerf initialises
N(0, 1) and divides the logits by sqrt(width). Both give the same function at initialisation, but
under Adam-type updates AlgoPerf's embedding moves sqrt(width) times slower relative to its scale,
too slowly for a two-minute run (validation loss 5.3 against 5.8 at step 400 of runs at batch 32).
Dropout rates are 0 unless the submission's `dropout_rate` sets them (AlgoPerf's default is 0.1).

    python submit.py --workload bible_translation --submission nadamw
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.attention import EncoderDecoderAttention
from harness.backends.torch.workload import TorchWorkload
from harness.bleu import bleu_statistics
from workloads.bible_translation import data
from workloads.bible_translation.workload import (
    DECODER_LAYERS, ENCODER_LAYERS, HEADS, LAYER_NORM_EPS, MLP_WIDTH, WIDTH, BibleTranslationWorkload,
)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width): sines in the first half, cosines in the second, as AlgoPerf's PositionalEncoding."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(width // 2) * (-math.log(10_000.0) / (width // 2 - 1)))
    return torch.cat((torch.sin(position * frequency), torch.cos(position * frequency)), dim=1)


def attention(width: int, heads: int, cross: bool) -> EncoderDecoderAttention:
    """Attention with dropout on its weights; torch's default Linear layers, which `Transformer`
    initialises."""
    return EncoderDecoderAttention(width, heads, cross, weight_dropout=True, xavier_per_part=False)


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(0.0), nn.Linear(hidden, width))


class EncoderBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS), nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attention = attention(width, heads, cross=False)
        self.mlp = Mlp(width, hidden)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention.attend(*self.attention.self_qkv(self.ln1(x)), mask=source_mask))
        return x + self.dropout(self.mlp(self.ln2(x)))


class DecoderBlock(nn.Module):
    """x + causal self-attention(LN(x)), x + attention over the encoder output(LN(x)), x + MLP(LN(x)).

    With a `cache` the block decodes: x holds the newest position only, and the keys and values of the
    earlier positions come from (and are added to) the cache's preallocated tensors.
    """

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(width, eps=LAYER_NORM_EPS) for _ in range(3))
        self.self_attention = attention(width, heads, cross=False)
        self.cross_attention = attention(width, heads, cross=True)
        self.mlp = Mlp(width, hidden)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x, memory_kv, source_mask, cache: dict | None = None) -> torch.Tensor:
        q, k, v = self.self_attention.self_qkv(self.ln1(x))
        if cache is not None:
            t = cache["length"]
            cache["k"][:, :, t : t + 1], cache["v"][:, :, t : t + 1] = k, v
            k, v, cache["length"] = cache["k"][:, :, : t + 1], cache["v"][:, :, : t + 1], t + 1
        x = x + self.dropout(self.self_attention.attend(q, k, v, causal=cache is None))
        q = self.cross_attention.query(self.ln2(x))
        x = x + self.dropout(self.cross_attention.attend(q, *memory_kv, mask=source_mask))
        return x + self.dropout(self.mlp(self.ln3(x)))


class Transformer(nn.Module):
    def __init__(self, vocabulary_size: int = data.VOCABULARY_SIZE, width: int = WIDTH, heads: int = HEADS,
                 hidden: int = MLP_WIDTH, encoder_layers: int = ENCODER_LAYERS,
                 decoder_layers: int = DECODER_LAYERS, max_length: int = data.MAX_LENGTH) -> None:
        super().__init__()
        self.shared_embedding = nn.Embedding(vocabulary_size, width)
        nn.init.normal_(self.shared_embedding.weight, std=width**-0.5)
        self.embedding_scale = math.sqrt(width)
        self.register_buffer("positions", sinusoidal_positions(max_length, width), persistent=False)
        self.dropout = nn.Dropout(0.0)
        self.encoder = nn.ModuleList(EncoderBlock(width, heads, hidden) for _ in range(encoder_layers))
        self.encoder_ln = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.decoder = nn.ModuleList(DecoderBlock(width, heads, hidden) for _ in range(decoder_layers))
        self.decoder_ln = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        for module in self.modules():  # AlgoPerf's wmt: Xavier-uniform kernels, N(0, 1e-6) biases
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6)

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, S, W) and the additive key mask (B, 1, 1, S) that hides source padding."""
        mask = torch.zeros(source.shape, device=source.device).masked_fill(source == data.PAD_ID, -math.inf)
        mask = mask[:, None, None, :]
        x = self.dropout(self.embed(source) + self.positions[: source.shape[1]])
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_ln(x), mask

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.shared_embedding(tokens) * self.embedding_scale

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_ln(x) @ self.shared_embedding.weight.T

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocabulary) of `batch['targets']` given `batch['inputs']`."""
        memory, mask = self.encode(batch["inputs"])
        targets = batch["targets"]
        shifted = F.pad(targets[:, :-1], (1, 0), value=data.PAD_ID)  # the start token is PAD_ID
        x = self.dropout(self.embed(shifted) + self.positions[: targets.shape[1]])
        for block in self.decoder:
            x = block(x, block.cross_attention.memory_kv(memory), mask)
        return self.logits(x)

    @torch.no_grad()
    def greedy_decode(self, source: torch.Tensor, max_length: int = data.MAX_LENGTH) -> torch.Tensor:
        """Greedy translations (B, <= max_length): token ids, PAD_ID after each sequence's EOS.

        Finished rows are dropped from the computation whenever they are a quarter of the rows left.
        """
        memory, mask = self.encode(source)
        memory_kv = [block.cross_attention.memory_kv(memory) for block in self.decoder]
        batch, heads, _, head_width = memory_kv[0][0].shape
        caches = [{"k": memory.new_empty(batch, heads, max_length, head_width),
                   "v": memory.new_empty(batch, heads, max_length, head_width), "length": 0} for _ in self.decoder]
        tokens = torch.full((batch, max_length), data.PAD_ID, dtype=torch.long, device=source.device)
        rows = torch.arange(batch, device=source.device)  # the rows of `tokens` still being decoded
        token = tokens[:, :1]  # the start token, PAD_ID
        done = torch.zeros(batch, dtype=torch.bool, device=source.device)  # has emitted EOS
        for step in range(max_length):
            x = self.embed(token) + self.positions[step]
            for block, kv, cache in zip(self.decoder, memory_kv, caches):
                x = block(x, kv, mask, cache)
            token = self.logits(x).argmax(-1).masked_fill(done[:, None], data.PAD_ID)
            tokens[rows, step] = token[:, 0]
            done |= token[:, 0] == data.EOS_ID
            if int(done.sum()) * 4 >= len(rows):
                if done.all():
                    return tokens[:, : step + 1]
                keep = ~done
                rows, token, mask, done = rows[keep], token[keep], mask[keep], done[keep]
                memory_kv = [(k[keep], v[keep]) for k, v in memory_kv]
                for cache in caches:
                    cache["k"], cache["v"] = cache["k"][keep], cache["v"][keep]
        return tokens


class Workload(BibleTranslationWorkload, TorchWorkload):
    output_layer_name = "shared_embedding"  # the output layer is the shared embedding, as in AlgoPerf's wmt

    def build_model(self) -> nn.Module:
        return Transformer()

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole batch: the decoder reads the targets shifted right (teacher forcing)."""
        return batch

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets, weights = batch["targets"], batch["weights"]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        correct = (logits.argmax(-1) == targets).float()
        return {"loss": (loss * weights.flatten()).sum(), "correct": (correct * weights).sum(), "tokens": weights.sum()}

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        """Teacher-forced loss and accuracy sums and, except on 'eval_train' (kept cheap), the BLEU
        statistics of the batch's greedy translations."""
        batch_sums = super().eval_batch_sums(split, params, model_state, rng, batch)
        if split != "eval_train":
            hypotheses = self.detokenize(params.greedy_decode(batch["inputs"]).cpu().numpy())
            batch_sums.update(bleu_statistics(hypotheses, batch["references"]))
        return batch_sums
