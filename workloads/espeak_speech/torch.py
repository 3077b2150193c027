"""A small Conformer (Gulati et al., 2020, arXiv:2005.08100) with a CTC head: AlgoPerf's
librispeech_conformer model (algoperf/workloads/librispeech_conformer/librispeech_pytorch/models.py)
scaled down for a CPU, on characters instead of 1,024 word pieces.

    python submit.py --workload espeak_speech --submission nadamw

Input: log-mel frames (batch, frames, 80) with their lengths. Two stride-2 convolutions subsample
time by 4, then Conformer blocks (half feed-forward, self-attention, convolution module, half
feed-forward, LayerNorm) and a linear head over the 29 CTC classes (blank 0, space, apostrophe, A-Z).
Differences from AlgoPerf's model, for a 2-core CPU: width 96 (AlgoPerf 512) and 3 blocks (AlgoPerf
4), 1-D subsampling convolutions over time (AlgoPerf: 2-D over time and frequency), LayerNorm
instead of BatchNorm in the convolution module (NeMo's `layer_norm` option), plain `nn.LayerNorm`,
no SpecAugment and no query scaler. About 0.7 M parameters.

The CTC loss is `torch.nn.functional.ctc_loss` (blank 0), except when a gradient is taken with
`create_graph=True`: its backward has no derivative, so Hessian-vector products (AdaHessian,
Sophia-H) use `ctc_nll`, the same loss written with differentiable tensor operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.workload import FUSED_ATTENTION_PARAMETER_TYPES, TorchWorkload
from workloads.espeak_speech import data
from workloads.espeak_speech.workload import (CONVOLUTION_KERNEL, DEPTH, FEED_FORWARD_EXPANSION, HEADS, NUM_CLASSES,
                                              WIDTH, EspeakSpeechWorkload, greedy_texts, subsampled_lengths,
                                              word_errors)

_DEAD = -1e30  # log-probability of unreachable CTC states: finite, so that gradients stay finite


class Subsampling(nn.Module):
    """Two 1-D convolutions over time (kernel 3, stride 2, mel bins as channels), each with ReLU:
    4x fewer frames. AlgoPerf uses 2-D convolutions over time and frequency; 1-D ones (as in
    Whisper's front end) cost a fifth as much here."""

    def __init__(self, width: int, n_mels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x * _frame_mask(lengths, x.shape[1])[:, :, None]
        x = F.relu(self.conv1(x.transpose(1, 2)))
        x = x * _frame_mask((lengths + 1) // 2, x.shape[2])[:, None, :]
        return F.relu(self.conv2(x)).transpose(1, 2)


def _frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, frames) float mask: 1 on the first `lengths` frames of each row."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]).float()


def sinusoids(frames: int, width: int, device) -> torch.Tensor:
    """Sinusoidal position signal (Vaswani et al., 2017), timescales 1 to 10,000 as in AlgoPerf."""
    timescales = torch.exp(-math.log(10_000.0) * torch.arange(width // 2, device=device) / (width // 2 - 1))
    angles = torch.arange(frames, device=device)[:, None] * timescales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FeedForward(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, FEED_FORWARD_EXPANSION * width)
        self.linear2 = nn.Linear(FEED_FORWARD_EXPANSION * width, width)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear2(F.silu(self.linear1(self.ln(x)))))


class SelfAttention(nn.Module):
    algoperf_parameter_types = FUSED_ATTENTION_PARAMETER_TYPES

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape
        qkv = self.qkv(self.ln(x)).view(batch, frames, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        keys = mask[:, None, None, :] > 0  # padded frames are never attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        return self.dropout(self.out(y.transpose(1, 2).reshape(batch, frames, width)))


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv with GLU, depthwise conv, LayerNorm, SiLU, pointwise conv."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.pointwise1 = nn.Linear(width, 2 * width)
        self.depthwise = nn.Conv1d(width, width, CONVOLUTION_KERNEL, padding="same", groups=width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.pointwise2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise1(self.ln(x)), dim=-1) * mask[:, :, None]
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        return self.dropout(self.pointwise2(F.silu(self.norm(y))))


class ConformerBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ff1, self.ff2 = FeedForward(width), FeedForward(width)
        self.attention = SelfAttention(width, heads)
        self.convolution = ConvolutionModule(width)
        self.ln = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attention(x, mask)
        x = x + self.convolution(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.ln(x)


class Conformer(nn.Module):
    def __init__(self, width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS) -> None:
        super().__init__()
        self.subsampling = Subsampling(width, data.N_MELS)
        self.dropout = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(ConformerBlock(width, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, NUM_CLASSES)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (batch, frames, mels), lengths) -> (logits (batch, frames', classes), paddings
        (batch, frames'): 1.0 on frames past an utterance's end), as AlgoPerf's model returns."""
        features, lengths = inputs
        x = self.subsampling(features, lengths)
        mask = _frame_mask(subsampled_lengths(lengths), x.shape[1])
        x = self.dropout(x + sinusoids(x.shape[1], x.shape[2], x.device))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x)), 1.0 - mask


def ctc_nll(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
            target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Per-example CTC negative log-likelihood (Graves et al., 2006) by the forward recursion in log
    space, twice differentiable. log_probs (batch, frames, classes); targets (batch, labels), padded.
    An alignment that cannot exist (too few frames) gives 0, as `F.ctc_loss(zero_infinity=True)`."""
    batch, frames, _ = log_probs.shape
    states = 2 * targets.shape[1] + 1
    extended = torch.full((batch, states), blank, dtype=torch.long, device=targets.device)
    extended[:, 1::2] = targets
    emissions = log_probs.gather(2, extended[:, None, :].expand(batch, frames, states))
    # A label state may be entered from two states back when it differs from the label there.
    skip = (extended != blank) & (extended != F.pad(extended, (2, 0), value=blank)[:, :states])
    dead = torch.full((batch, states), _DEAD, dtype=log_probs.dtype, device=log_probs.device)
    alpha = torch.cat([emissions[:, 0, :2], dead[:, 2:]], dim=1)
    for t in range(1, frames):
        from_prev = torch.cat([dead[:, :1], alpha[:, :-1]], dim=1)
        from_skip = torch.where(skip, torch.cat([dead[:, :2], alpha[:, :-2]], dim=1), dead)
        step = torch.logsumexp(torch.stack([alpha, from_prev, from_skip]), dim=0) + emissions[:, t]
        alpha = torch.where((t < input_lengths)[:, None], step, alpha)
    last = alpha.gather(1, (2 * target_lengths)[:, None])[:, 0]
    before_last = alpha.gather(1, (2 * target_lengths - 1).clamp(min=0)[:, None])[:, 0]
    nll = -torch.where(target_lengths > 0, torch.logaddexp(last, before_last), last)
    return torch.where(nll < -_DEAD / 2, nll, torch.zeros_like(nll))


def _torch_ctc(log_probs, targets, input_lengths, target_lengths) -> torch.Tensor:
    return F.ctc_loss(log_probs.transpose(0, 1), targets, input_lengths, target_lengths, reduction="none",
                      zero_infinity=True)


class _CtcLoss(torch.autograd.Function):
    """Per-example `F.ctc_loss` (zero_infinity) of log-probabilities (batch, frames, classes); when
    the gradient's own graph is requested (`create_graph=True`), its backward goes through `ctc_nll`."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths):
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths)
        return _torch_ctc(log_probs, targets, input_lengths, target_lengths)

    @staticmethod
    def backward(ctx, grad):
        log_probs, targets, input_lengths, target_lengths = ctx.saved_tensors
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if create_graph:
                nll = ctc_nll(log_probs, targets, input_lengths, target_lengths)
                inputs = log_probs
            else:
                inputs = log_probs.detach().requires_grad_()
                nll = _torch_ctc(inputs, targets, input_lengths, target_lengths)
            (grad_log_probs,) = torch.autograd.grad(nll, inputs, grad, create_graph=create_graph)
        return grad_log_probs, None, None, None


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-example CTC loss, blank 0, infeasible alignments counted as 0; twice differentiable."""
    return _CtcLoss.apply(log_probs, targets, input_lengths, target_lengths)


def greedy_decode(logits: torch.Tensor, paddings: torch.Tensor) -> list[str]:
    """Best class per frame, repeats collapsed, blanks removed (AlgoPerf's `greedy_decode`), as text."""
    return greedy_texts(logits.argmax(-1).cpu().numpy(), (1.0 - paddings).sum(1).long().cpu().numpy())


def sample_ctc_labels(logits: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
    """Label sequences drawn from the model's CTC distribution p(y | x): a class per frame from its
    softmax, repeats collapsed, blanks and padded frames dropped. Zero-padded like the targets."""
    path = torch.distributions.Categorical(logits=logits.detach()).sample() * (paddings == 0)
    first = torch.ones_like(path, dtype=torch.bool)
    first[:, 1:] = path[:, 1:] != path[:, :-1]
    keep = first & (path != 0)
    labels = torch.zeros(path.shape[0], max(int(keep.sum(1).max()), 1), dtype=torch.long, device=path.device)
    rows = torch.arange(path.shape[0], device=path.device)[:, None].expand_as(path)
    labels[rows[keep], (keep.cumsum(1) - 1)[keep]] = path[keep]
    return labels


class Workload(EspeakSpeechWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return Conformer()

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features cut to the batch's longest utterance, lengths); the model's output is the pair
        (logits, logit_paddings)."""
        lengths = batch["input_lengths"]
        return batch["inputs"][:, : int(lengths.max())].float(), lengths

    def loss_fn(self, label_batch: torch.Tensor, logits_batch: tuple[torch.Tensor, torch.Tensor],
                mask_batch: torch.Tensor | None = None, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
        """CTC loss summed over examples; `n_valid_examples` counts target characters, as in AlgoPerf's
        librispeech workloads (so the mean is per character). Label smoothing does not apply to CTC.
        Records the training loss (calls made with gradients on) for the harness's divergence check."""
        del label_smoothing
        logits, paddings = logits_batch
        target_lengths = (label_batch > 0).sum(1)
        input_lengths = (1.0 - paddings).sum(1).long()
        per_example = ctc_loss(logits.float().log_softmax(-1), label_batch, input_lengths, target_lengths)
        weights = target_lengths.to(per_example.dtype)
        if mask_batch is not None:
            per_example = per_example * mask_batch
            weights = weights * mask_batch
        summed, n_valid_examples = per_example.sum(), weights.sum().clamp(min=1.0)
        if torch.is_grad_enabled():
            self.last_train_loss = (summed, n_valid_examples)
        return {"summed": summed, "n_valid_examples": n_valid_examples, "per_example": per_example}

    def sample_labels(self, logits_batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Targets sampled from the model's own predictive distribution (for Gauss-Newton-Bartlett
        curvature estimates such as Sophia-G's): `sample_ctc_labels`."""
        return sample_ctc_labels(*logits_batch)

    def eval_sums(self, logits: tuple[torch.Tensor, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        loss = self.loss_fn(batch["targets"], logits)
        references = batch.get("references") or [data.decode(row) for row in batch["targets"].cpu().numpy()]
        errors, words = word_errors(references, greedy_decode(*logits))
        return {"loss": loss["summed"], "characters": loss["n_valid_examples"],
                "word_errors": torch.tensor(float(errors)), "words": torch.tensor(float(words))}
