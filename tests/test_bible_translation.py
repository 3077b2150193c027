"""The bible_translation workload: preparing verse pairs from SWORD imp exports (tiny files written
here), BLEU from summed statistics against sacrebleu, the Transformer's cached greedy decoding, and a
few NAdamW steps on the real data."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from support import nadamw_on_one_batch
from harness import spec
from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.bible_translation import data
from workloads.bible_translation.torch import Transformer
from harness.bleu import bleu_from_statistics, bleu_statistics
from workloads.kjv_lm import data as kjv

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
EN, ES = data.MODULES["en"][0], data.MODULES["es"][0]
WORDS_EN = "and the LORD spake unto Moses saying speak unto the children of Israel".split()
WORDS_ES = "y habló Jehová á Moisés diciendo habla á los hijos de Israel".split()


def verse(words: list[str], chapter: int, verse_number: int) -> str:
    """A sentence that differs from verse to verse but reuses a small vocabulary."""
    n = len(words)
    return " ".join(words[(chapter * 3 + verse_number + i) % n] for i in range(4 + (chapter + verse_number) % 6)) + "."


def write_exports(directory: Path, chapters: int = 40, verses: int = 3, spanish_extra: str = "") -> None:
    """Two imp exports in the real format: headings, markup (paragraph signs, \\nd, Strong's numbers),
    a verse only the KJV has, and one verse too long to keep."""
    en = ["$$$[ Module Heading ]", "", "$$$Genesis 0:0", " ", "$$$Genesis 1:0", ""]
    es = ["$$$[ Module Heading ]", "", "$$$Genesis 0:0", " ", "Génesis", "$$$Genesis 1:0", ""]
    for c in range(1, chapters + 1):
        for v in range(1, verses + 1):
            en += [f"$$$Genesis {c}:{v}", "\u00b6 " + verse(WORDS_EN, c, v).replace("LORD", "\\nd LORD")]
            es += [f"$$$Genesis {c}:{v}", verse(WORDS_ES, c, v).replace("Jehová", "Jehová <H3068>")]
    en += ["$$$Genesis 1:9", "A verse the Spanish module lacks."]
    en += ["$$$Exodus 1:1", " ".join(f"word{i}" for i in range(80))]
    es += ["$$$Exodus 1:1", " ".join(f"palabra{i}" for i in range(80)) + spanish_extra]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{EN}.imp").write_text("\n".join(en) + "\n", encoding="utf-8")
    (directory / f"{ES}.imp").write_text("\n".join(es) + "\n", encoding="utf-8")


@pytest.fixture
def no_mod2imp(monkeypatch):
    monkeypatch.setattr(kjv.shutil, "which", lambda name: None)


def test_markup_is_dropped():
    assert data.clean("\u00b6 And the \\nd LORD said,  Let", "en") == "And the LORD said, Let"
    assert data.clean("comerás <H0398>; y <G3588> dijo", "es") == "comerás; y dijo"


def test_prepare_pairs_verses_by_key_and_splits_by_chapter(tmp_path, no_mod2imp):
    write_exports(tmp_path / data.NAME)
    workload = load_workload("bible_translation", "pytorch", tmp_path)
    splits = workload.load_splits()
    # 40 chapters of 3 verses: chapters 8, 28 (index 7, 27) validate, 18, 38 test; Exodus 1 (index 40)
    # is train but too long; Genesis 1:9 has no Spanish.
    assert {s: len(splits[s]["targets"]) for s in data.SPLITS} == {"train": 108, "validation": 6, "test": 6}
    keys = {s: sorted(key for key, _, _ in workload.pairs[s]) for s in data.SPLITS}
    assert keys["validation"] == sorted(f"Genesis {c}:{v}" for c in (8, 28) for v in (1, 2, 3))
    assert "Genesis 1:9" not in keys["train"] and "Exodus 1:1" not in keys["train"]
    tokenizer = data.load_tokenizer(workload.tokenizer_model)
    for split in data.SPLITS:
        arrays = splits[split]
        assert arrays["inputs"].shape[1] == arrays["targets"].shape[1] == data.MAX_LENGTH
        assert arrays["inputs"].dtype == arrays["targets"].dtype == np.int64
        np.testing.assert_array_equal(arrays["weights"], (arrays["targets"] != data.PAD_ID).astype(np.float32))
        for row, (key, en, es) in enumerate(workload.pairs[split]):
            for ids, text in ((arrays["inputs"][row], en), (arrays["targets"][row], es)):
                n = int((ids != data.PAD_ID).sum())
                assert ids[n - 1] == data.EOS_ID and not ids[n:].any()
                assert tokenizer.decode(ids[: n - 1].tolist()) == text
            c, v = map(int, key.split()[1].split(":"))
            assert en == verse(WORDS_EN, c, v) and es == verse(WORDS_ES, c, v)  # markup gone


def test_training_batches_are_an_epoch_cut_to_their_longest_pair(tmp_path, no_mod2imp):
    write_exports(tmp_path / data.NAME)
    workload = load_workload("bible_translation", "pytorch", tmp_path)
    train = workload.load_splits()["train"]

    def pairs(inputs, targets) -> Counter:
        return Counter((tuple(i[i != data.PAD_ID]), tuple(t[t != data.PAD_ID])) for i, t in zip(inputs, targets))

    def epoch(seed: int) -> list[dict]:
        queue = workload._build_input_queue(seed, "train", str(tmp_path), 8)
        return [next(queue) for _ in range(108 // 8)]

    batches = epoch(0)
    seen = Counter()
    for batch in batches:
        assert batch["inputs"][:, -1].any() and batch["targets"][:, -1].any()  # no all-padding column
        assert torch.equal(batch["weights"], (batch["targets"] != data.PAD_ID).float())
        seen += pairs(batch["inputs"].numpy(), batch["targets"].numpy())
    assert seen.total() == 104 and not seen - pairs(train["inputs"], train["targets"])  # less the last batch
    # 104 pairs are one pool: sorted by length, then cut, so the batches' length ranges do not overlap.
    ranges = sorted((int(n.min()), int(n.max())) for n in
                    ((b["inputs"] != data.PAD_ID).sum(1) + (b["targets"] != data.PAD_ID).sum(1) for b in batches))
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))
    assert all(torch.equal(a["targets"], b["targets"]) for a, b in zip(batches, epoch(0)))
    assert [b["targets"].shape for b in batches] != [b["targets"].shape for b in epoch(1)]


def test_same_exports_give_identical_files_and_hash_and_a_copy_is_reused(tmp_path, no_mod2imp, monkeypatch):
    for name in ("a", "b"):
        write_exports(tmp_path / name / data.NAME)
    first, second = data.prepare(tmp_path / "a"), data.prepare(tmp_path / "b")
    assert (first / "spm.model").read_bytes() == (second / "spm.model").read_bytes()
    assert data.files_hash(first) == data.files_hash(second)
    assert load_workload("bible_translation", "pytorch", tmp_path / "a").data_hash() == data.files_hash(first)

    def no_build(*args):
        raise AssertionError("rebuilt a current copy")

    monkeypatch.setattr(data, "_build", no_build)
    assert data.prepare(tmp_path / "a") == first
    monkeypatch.undo()
    monkeypatch.setattr(kjv.shutil, "which", lambda name: None)
    write_exports(tmp_path / "a" / data.NAME, spanish_extra=" otra")  # a changed source is rebuilt
    assert data.files_hash(data.prepare(tmp_path / "a")) != data.files_hash(second)
    assert not [p for p in (tmp_path / "a" / data.NAME).iterdir() if p.name.startswith(".")]


def test_missing_modules_name_the_debian_packages(tmp_path, no_mod2imp):
    with pytest.raises(DataMissingError, match="sword-text-kjv and libsword-utils"):
        data.prepare(tmp_path)
    write_exports(tmp_path / data.NAME)
    (tmp_path / data.NAME / f"{ES}.imp").unlink()
    with pytest.raises(DataMissingError, match=f"sword-text-sparv and libsword-utils.*mod2imp {ES} -s"):
        data.prepare(tmp_path)


def test_malformed_exports_are_named(tmp_path, no_mod2imp):
    write_exports(tmp_path / data.NAME)
    (tmp_path / data.NAME / f"{ES}.imp").write_text("not an imp file\n")
    with pytest.raises(UserInputError, match=f"{ES}.imp holds no verses"):
        data.prepare(tmp_path)
    (tmp_path / data.NAME / f"{ES}.imp").write_text("$$$Matthew 1:1\nLibro de la generación de Jesucristo\n")
    with pytest.raises(UserInputError, match="share no verse keys"):
        data.prepare(tmp_path)


def bleu(hypotheses: list[str], references: list[str], batch: int | None = None) -> float:
    """BLEU from statistics summed over batches of `batch` sentences."""
    batch = batch or len(hypotheses)
    sums: dict[str, float] = {}
    for start in range(0, len(hypotheses), batch):
        stats = bleu_statistics(hypotheses[start : start + batch], references[start : start + batch])
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
    return bleu_from_statistics(sums)


def test_bleu_of_hand_computed_cases():
    assert bleu(["y dijo Dios : Sea la luz"], ["y dijo Dios : Sea la luz"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["e f g h"]) == 0.0
    # precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty: 100 * (0.8 * 0.75 * 2/3 * 0.5) ** 0.25
    assert bleu(["a b c d x"], ["a b c d e"]) == pytest.approx(100 * 0.2**0.25)
    # all precisions 1, brevity penalty exp(1 - 6/5)
    assert bleu(["a b c d e"], ["a b c d e f"]) == pytest.approx(100 * math.exp(-0.2))


def test_bleu_summed_over_batches_equals_sacrebleu_on_the_corpus():
    import sacrebleu

    rng = np.random.default_rng(0)
    references = [verse(WORDS_ES, c, v) for c in range(1, 8) for v in range(1, 6)]
    hypotheses = [" ".join(w for w in ref.split() if rng.random() < 0.8) for ref in references]
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert 5 < expected < 95
    for batch in (1, 7, len(references)):
        assert bleu(hypotheses, references, batch) == pytest.approx(expected, abs=1e-9)


def test_cached_greedy_decoding_matches_full_recomputation():
    torch.manual_seed(7)
    model = Transformer(vocabulary_size=8, width=32, heads=4, hidden=32, encoder_layers=2, decoder_layers=2).eval()
    # An untied random read-out (used by decoding and by the full forward pass alike), so that rows emit
    # EOS at different steps and finished rows get dropped from the computation.
    readout = torch.randn(32, 8)
    model.logits = lambda x: model.decoder_ln(x) @ readout
    rows = 16
    source = torch.randint(3, 8, (rows, 10))
    source[:, 7:] = data.PAD_ID
    source[:, 6] = data.EOS_ID
    decoded = model.greedy_decode(source, max_length=12)
    ended = (decoded == data.EOS_ID).any(1)
    end_steps = set((decoded == data.EOS_ID).float().argmax(1)[ended].tolist())
    assert rows // 4 <= int(ended.sum()) < rows and len(end_steps) >= 3 and decoded.shape == (rows, 12)
    # Step by step without a cache: the argmax at each position of the teacher-forced logits.
    prefix = torch.zeros(rows, 0, dtype=torch.long)
    for step in range(decoded.shape[1]):
        targets = torch.cat((prefix, torch.zeros(rows, 1, dtype=torch.long)), dim=1)
        prefix = torch.cat((prefix, model({"inputs": source, "targets": targets})[:, -1:].argmax(-1)), dim=1)
    after_eos = torch.cumsum(prefix == data.EOS_ID, dim=1) - (prefix == data.EOS_ID).long() > 0
    np.testing.assert_array_equal(decoded, prefix.masked_fill(after_eos, data.PAD_ID))
    # Extra source padding changes nothing.
    padded = torch.cat((source, torch.zeros(rows, 4, dtype=torch.long)), dim=1)
    targets = torch.randint(3, 8, (rows, 8))
    torch.testing.assert_close(model({"inputs": padded, "targets": targets}),
                               model({"inputs": source, "targets": targets}))


def test_parameter_types_name_attention_embedding_and_layer_norm():
    workload = load_workload("bible_translation", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(0)
    types, T = workload.model_params_types, spec.ParameterType
    assert set(types) == {name for name, _ in model.named_parameters()}
    assert types["shared_embedding.weight"] == T.EMBEDDING and workload.is_output_params("shared_embedding.weight")
    assert types["encoder.0.attention.qkv.weight"] == types["decoder.0.self_attention.qkv.weight"] == T.ATTENTION_QKV
    assert types["decoder.0.cross_attention.q.weight"] == T.ATTENTION_Q
    assert types["decoder.0.cross_attention.kv.weight"] == T.ATTENTION_KV
    assert types["decoder.0.cross_attention.out.weight"] == T.ATTENTION_OUT
    assert types["decoder.0.ln3.weight"] == T.LAYER_NORM_SCALE and types["encoder.0.mlp.0.bias"] == T.BIAS


def test_nadamw_steps_on_real_data_lower_the_loss_and_evaluation_is_finite():
    workload = load_workload("bible_translation", "pytorch", DATA_DIR)
    workload.step_hint = 40  # a short schedule: warmup is over after 4 steps
    splits = workload.load_splits()
    assert len(splits["train"]["targets"]) == workload.num_train_examples
    assert len(splits["validation"]["targets"]) >= workload.num_validation_examples
    assert len(splits["test"]["targets"]) >= workload.num_test_examples
    batch = next(workload._build_input_queue(0, "train", str(DATA_DIR), 16))  # the same batch every step
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 10)
    assert after < 0.8 * before
    metrics = workload._eval_model_on_split("validation", 12, 8, model, model_state, 0, str(DATA_DIR))
    assert set(metrics) == {"loss", "accuracy", "bleu"} and all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["accuracy"] <= 1
    train = workload._eval_model_on_split("eval_train", 12, 8, model, model_state, 0, str(DATA_DIR))
    assert set(train) == {"loss", "accuracy"} and all(math.isfinite(v) for v in train.values())
