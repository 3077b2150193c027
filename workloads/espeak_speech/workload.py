"""Character-level speech recognition with CTC on KJV sentences spoken by espeak-ng: the mini suite's
analog of AlgoPerf's librispeech_conformer (and librispeech_deepspeech).

Data (`data.py`): 3,000 train, 300 validation and 300 test utterances of 4-10 word KJV sentences,
each spoken by one of 72 espeak-ng voices (8 English accents x 9 variants) at its own rate and
pitch, stored in LibriSpeech's layout and FLAC format; validation and test sentences come from
chapters that train never sees. Inputs: 80-bin log-mel frames (25 ms window, 10 ms hop),
normalised per bin with the train split's mean and standard deviation, zero-padded to the split's
longest utterance (float16, with `input_lengths`); the data hash covers these prepared features.
Targets: character ids 1..28 (space, apostrophe, A-Z; CTC blank is 0), zero-padded.
Metric: word error rate of greedy CTC decoding (lower is better), as AlgoPerf's; also the CTC loss
per target character (`ctc_loss`).
"""

from __future__ import annotations

import jiwer
import numpy as np

from harness import batching, spec
from workloads.espeak_speech import data

# The Conformer's size, the same in every framework (`torch.py`, `jax.py`, where the differences from
# AlgoPerf's model are listed).
WIDTH = 96  # AlgoPerf: 512; sized so that step_hint steps take about 2 minutes on a 2-core CPU
DEPTH = 3  # AlgoPerf: 4
HEADS = 4  # AlgoPerf: 8 heads of 64; here 4 heads of 24
FEED_FORWARD_EXPANSION = 4  # AlgoPerf's ConformerConfig
CONVOLUTION_KERNEL = 5  # AlgoPerf's ConformerConfig.convolution_kernel_size
NUM_CLASSES = 1 + len(data.ALPHABET)


def pad(rows: list[np.ndarray], width: int, dtype) -> np.ndarray:
    """Rows of different lengths, zero-padded at the end to `width`, stacked."""
    out = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def subsampled_lengths(lengths):
    """Frames left after the model's two stride-2 convolutions (kernel 3, padding 1): ceil(ceil(n / 2) / 2)."""
    return (lengths + 3) // 4


def static_shapes(batch: dict, frame_multiple: int, label_multiple: int) -> dict:
    """The batch with `inputs` cut or zero-padded to its longest utterance rounded up to a multiple of
    `frame_multiple` frames, and `targets` zero-padded to a multiple of `label_multiple` characters: a
    few batch shapes, for a framework that compiles one program per shape."""
    inputs, targets = batch["inputs"], batch["targets"]
    frames = -(-int(batch["input_lengths"].max()) // frame_multiple) * frame_multiple
    labels = -(-targets.shape[1] // label_multiple) * label_multiple
    return {**batch, "inputs": pad(inputs[:, :frames], frames, inputs.dtype),
            "targets": pad(targets, labels, targets.dtype)}


def greedy_texts(best_classes: np.ndarray, frames: np.ndarray) -> list[str]:
    """Greedy CTC decoding (AlgoPerf's `greedy_decode`) of each utterance's best class per frame
    (batch, frames'): its first `frames` classes, repeats collapsed, blanks removed, as text."""
    texts = []
    for row, n in zip(best_classes, frames):
        row = row[:n]
        collapsed = row[np.r_[True, row[1:] != row[:-1]]] if n else row
        texts.append(data.decode(collapsed))
    return texts


def word_errors(references: list[str], hypotheses: list[str]) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) over utterances, by jiwer."""
    result = jiwer.process_words(references, hypotheses)
    return result.substitutions + result.deletions + result.insertions, sum(len(r.split()) for r in references)


class EspeakSpeechWorkload(spec.Workload):
    name = "espeak_speech"
    suite = "mini"
    target_metric_name = "wer"
    metric_direction = "min"
    # From scripts/set_targets.py (five-point tuning at half length, median of three seeds) on a
    # 2-core CPU: docs/targets/espeak_speech.json, docs/targets.md.
    validation_target_value = 0.574
    test_target_value = 0.570
    # 1.5 x 863 steps (the latest seed's steps to target) x calibration_seconds_per_step, rounded up
    # to 10 s (docs/targets.md); scaled on other machines (harness/machine_profile.py).
    max_allowed_runtime_sec = 90.0
    calibration_seconds_per_step = 0.06498  # python -m harness.calibrate on the calibration machine
    # max(budget / 20, 6 x one evaluation's 0.73 s) (docs/targets.md): evaluation under 15 % of a trial
    eval_period_time_sec = 5.0
    # About 2 minutes of NAdamW steps on a quiet 2-core CPU: a step costs about 1.3x a kjv_lm step
    # (measured side by side on a shared machine), and kjv_lm's is about 105 ms (docs/targets.md).
    step_hint = 900
    loss_type = spec.LossType.CTC_LOSS
    reference_batch_size = 16
    num_train_examples = data.NUM_UTTERANCES["train"]
    num_validation_examples = data.NUM_UTTERANCES["validation"]
    num_test_examples = data.NUM_UTTERANCES["test"]
    num_eval_train_examples = 100
    # Utterances sorted by length (eval_batch_indices); on a quiet 2-core CPU an evaluation takes 0.7 s at 25 or 50,
    # 0.9 s at 100.
    eval_batch_size = 50

    def read_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        """Per split: `inputs` (N, frames, 80) float16, `input_lengths` (N,) int64, `targets`
        (N, characters) int64; and the sha256 of the prepared features (prepared on first use)."""
        root = data.prepare(self.data_dir)
        splits = {}
        for split in data.SPLITS:
            arrays = data.read_features(root, split)
            lengths = arrays["lengths"]
            labels = [data.encode(t) for t in arrays["transcripts"]]
            splits[split] = {
                "inputs": pad(np.split(arrays["features"], np.cumsum(lengths)[:-1]), int(lengths.max()), np.float16),
                "input_lengths": lengths,
                "targets": pad(labels, max(len(t) for t in labels), np.int64),
            }
        return splits, data.corpus_hash(root / "features")

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        return {"ctc_loss": sums["loss"] / sums["characters"], "wer": sums["word_errors"] / sums["words"]}

    def eval_batch_indices(self, split: str, num_examples: int, batch_size: int):
        """The first `num_examples` utterances of `split` in batches of similar length (a stable sort by
        frames), so that a batch is padded to little more than its own utterances. Sums over utterances
        do not depend on the order."""
        lengths = self.host_split(split)["input_lengths"][:num_examples]
        return batching.in_order(len(lengths), batch_size, np.argsort(lengths, kind="stable"))

    def host_eval_batch(self, split: str, index) -> dict:
        """The batch without the frames past its longest utterance, and with its reference transcripts,
        decoded once; kept between evaluations."""
        batch = self.host_batch(split, index)
        frames = int(batch["input_lengths"].max())
        return {**batch, "inputs": batch["inputs"][:, :frames], "references": [data.decode(row) for row in batch["targets"]]}
