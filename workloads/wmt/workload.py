"""WMT17 German -> English translation with AlgoPerf's Transformer: the AlgoPerf-scale `wmt` workload
(AlgoPerf v0.6, mlcommons/algorithmic-efficiency `algoperf/workloads/wmt/workload.py`; every constant
below is from that file unless it says otherwise).

Data (see `data.py`, prepared once by `python -m harness.prepare_data --workload wmt`): the 5,906,184
training pairs of WMT17 de-en, packed into rows of 256 tokens; validation = newstest2013 (3,000 pairs)
and test = newstest2014 (3,003 pairs), as AlgoPerf's wmt14_translate validation and test splits; a
shared 32k SentencePiece vocabulary. Training batches are packed rows (`inputs`, `targets` and their
`*_position` / `*_segmentation` keys, AlgoPerf's names) with `weights` = 1 on non-padding targets.
Evaluation batches are single pairs padded to 256 tokens, `eval_batch_size` rows (the last batch of a
split padded with empty rows, whose translations are dropped), with their reference texts.

Metric: corpus BLEU (sacrebleu, 13a tokenisation, exponential smoothing: `harness/bleu.py`) of beam-search
translations (beam 4, brevity penalty alpha 0.6, at most 256 tokens: AlgoPerf's `translate_and_calculate_bleu`)
against the detokenised reference targets, on every split (AlgoPerf reports train/bleu too); also the
teacher-forced per-token `loss` (no label smoothing) and `accuracy`.

The model's size is AlgoPerf's (`ALGOPERF_CONFIG`). For tests only, `TIMETRIAL_WMT_TEST_MODEL=1` in the
environment selects `TEST_CONFIG`, a tiny model over the prepared (tiny) vocabulary, with batches of TEST_BATCH_SIZE, translations of at most
TEST_MAX_DECODE_LENGTH tokens and TEST_EVAL_TRAIN_PAIRS train pairs evaluated; a run made so says
`test_model: true` in its meta.json, and without the variable a vocabulary other than 32k is refused.
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from harness import batching, spec
from harness.bleu import bleu_from_statistics, bleu_references, bleu_statistics
from harness.errors import UserInputError
from workloads.wmt import data

TEST_MODEL_VARIABLE = "TIMETRIAL_WMT_TEST_MODEL"
BEAM_SIZE = 4  # AlgoPerf wmt_jax/workload.py predict_step
BREVITY_ALPHA = 0.6  # ibid., decode.beam_search(alpha=0.6)
MAX_DECODE_LENGTH = 256  # ibid., translate_and_calculate_bleu(max_predict_length=256)


@dataclass(frozen=True)
class TransformerConfig:
    """AlgoPerf's wmt Transformer (wmt_jax/models.py TransformerConfig, wmt_pytorch/models.py Transformer)."""

    vocab_size: int = data.VOCABULARY_SIZE
    width: int = 1024  # emb_dim = qkv_dim
    heads: int = 16
    mlp_width: int = 1024  # mlp_dim
    encoder_layers: int = 6
    decoder_layers: int = 6
    max_length: int = data.MAX_LENGTH  # positions of the sinusoidal table
    dropout_rate: float = 0.1  # DROPOUT_RATE, model_fn's default
    layer_norm_eps: float = 1e-6


ALGOPERF_CONFIG = TransformerConfig()
# Tests only (TEST_MODEL_VARIABLE): vocab_size is replaced by the prepared vocabulary's.
TEST_CONFIG = TransformerConfig(width=32, heads=2, mlp_width=32, encoder_layers=1, decoder_layers=1)
TEST_BATCH_SIZE = 16  # training and evaluation batches of the test model
TEST_MAX_DECODE_LENGTH = 32  # the test model's translations (untrained, it seldom ends them)
TEST_EVAL_TRAIN_PAIRS = 64


def test_model_requested() -> bool:
    return os.environ.get(TEST_MODEL_VARIABLE, "") not in ("", "0")


class WmtWorkload(spec.Workload):
    name = "wmt"
    suite = "algoperf"
    target_metric_name = "bleu"
    metric_direction = "max"
    validation_target_value = 30.8491
    test_target_value = 30.7219
    max_allowed_runtime_sec = 43_336  # ~12 hours on AlgoPerf's 8 x V100 machine (v0.6)
    eval_period_time_sec = 14 * 60
    step_hint = 120_000
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    num_train_examples = 5_906_184  # pairs (the train split holds them packed into fewer rows)
    num_validation_examples = 3_000
    num_test_examples = 3_003
    reference_batch_size = 128  # AlgoPerf's baselines' get_batch_size('wmt')
    eval_batch_size = 128
    # AlgoPerf rounds the validation size up to a multiple of the evaluation batch size: 3,072
    # (data.NUM_EVAL_TRAIN pairs are prepared).
    num_eval_train_examples = math.ceil(3_000 / 128) * 128
    max_decode_length = MAX_DECODE_LENGTH  # tokens a translation may have

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir)
        self._tokenizer = None
        self._manifest: dict | None = None
        if test_model_requested():
            self.reference_batch_size = self.eval_batch_size = TEST_BATCH_SIZE
            self.num_eval_train_examples = TEST_EVAL_TRAIN_PAIRS
            self.max_decode_length = TEST_MAX_DECODE_LENGTH

    # ----- data -----
    def prepare_dataset(self, source_dir: Path | None) -> None:
        """Build the prepared data (`python -m harness.prepare_data --workload wmt`); trials only read it."""
        data.prepare(self.data_dir, source_dir)

    def read_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        """The prepared splits; a vocabulary other than AlgoPerf's is refused unless the test model is asked for."""
        splits, content_hash, manifest = data.read_splits(self.data_dir)
        vocabulary = int(manifest["vocabulary_size"])
        if vocabulary != ALGOPERF_CONFIG.vocab_size and not test_model_requested():
            raise UserInputError(
                f"the wmt data in {self.data_dir} was prepared with a {vocabulary}-piece vocabulary, not AlgoPerf's "
                f"{ALGOPERF_CONFIG.vocab_size}: a test fixture (set {TEST_MODEL_VARIABLE}=1 to run the test model on it) "
                f"or an incomplete preparation; rerun python -m harness.prepare_data --workload wmt --data_dir {self.data_dir}"
            )
        self._manifest = manifest
        return splits, content_hash

    @property
    def model_config(self) -> TransformerConfig:
        """AlgoPerf's configuration, or under TEST_MODEL_VARIABLE the test model over the prepared vocabulary."""
        self.load_splits()
        if test_model_requested():
            return replace(TEST_CONFIG, vocab_size=int(self._manifest["vocabulary_size"]))
        return ALGOPERF_CONFIG

    def facts(self) -> dict:
        facts = super().facts()
        facts["model_config"] = asdict(self.model_config)
        facts["test_model"] = test_model_requested()
        return facts

    def host_split(self, split: str) -> dict[str, np.ndarray]:
        """A split's arrays; 'eval_train' is its own sample of training pairs, unpacked (data.py)."""
        return self.load_splits()[split]

    def host_batch(self, split: str, index) -> dict[str, np.ndarray]:
        """Rows `index` as int32 arrays (stored as uint16/uint8), with `weights` = 1 on non-padding targets."""
        batch = {key: np.asarray(value[index], dtype=np.int32) for key, value in self.host_split(split).items()}
        batch["weights"] = (batch["targets"] != data.PAD_ID).astype(np.float32)
        return batch

    def eval_batch_indices(self, split: str, num_examples: int, batch_size: int):
        """The first `num_examples` pairs of `split` in batches of similar source length (a stable sort), so
        that a batch's beam searches end at similar steps; each batch padded to `batch_size` rows with -1
        (empty rows), so every batch has one shape. Sums over pairs do not depend on the order."""
        inputs = self.host_split(split)["inputs"][:num_examples]
        order = np.argsort((np.asarray(inputs) != data.PAD_ID).sum(1), kind="stable")
        for index in batching.in_order(len(order), batch_size, order):
            yield np.concatenate([index, np.full(batch_size - len(index), -1, dtype=index.dtype)])

    def host_eval_batch(self, split: str, index) -> dict:
        """Real rows first, then empty rows (index -1: all padding, weight 0), and the real rows' reference
        texts (the detokenised targets, as AlgoPerf) prepared once as `references`."""
        real = index[index >= 0]
        batch = self.host_batch(split, real)
        missing = len(index) - len(real)
        batch = {key: np.concatenate([value, np.zeros((missing,) + value.shape[1:], value.dtype)])
                 for key, value in batch.items()}
        batch["references"] = bleu_references(self.detokenize(batch["targets"][: len(real)]))
        return batch

    def detokenize(self, tokens: np.ndarray) -> list[str]:
        """Text of each row of token ids, up to its first EOS, padding dropped."""
        if self._tokenizer is None:
            self._tokenizer = data.load_tokenizer(self.data_dir)
        rows = []
        for row in np.asarray(tokens).tolist():
            row = row[: row.index(data.EOS_ID)] if data.EOS_ID in row else row
            rows.append([t for t in row if t != data.PAD_ID])
        return self._tokenizer.decode(rows)

    # ----- evaluation -----
    @abc.abstractmethod
    def translate(self, params, inputs) -> np.ndarray:
        """Beam-search translations of `inputs` (the framework's array) as NumPy token ids [batch, length]:
        beam BEAM_SIZE, brevity penalty BREVITY_ALPHA, at most `max_decode_length` tokens."""

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        """Teacher-forced loss and accuracy sums, and the BLEU statistics of the batch's beam-search
        translations of its real rows."""
        arrays = {key: batch[key] for key in ("inputs", "targets", "weights")}
        batch_sums = super().eval_batch_sums(split, params, model_state, rng, arrays)
        references = batch["references"]
        hypotheses = self.detokenize(self.translate(params, batch["inputs"])[: references.count])
        batch_sums.update(bleu_statistics(hypotheses, references))
        return batch_sums

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss"] / sums["tokens"], "accuracy": sums["correct"] / sums["tokens"],
                "bleu": bleu_from_statistics(sums)}
