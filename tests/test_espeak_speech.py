"""The espeak_speech workload: LibriSpeech-layout reading (on real LibriVox clips), the espeak-ng
corpus build, CTC loss and greedy decoding, WER, and a few training steps on the real corpus."""

from __future__ import annotations

import math
import re
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from support import nadamw_on_one_batch, taken_train_loss
from harness import spec
from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.espeak_speech import data
from workloads.espeak_speech.torch import Workload, ctc_loss, ctc_nll, greedy_decode, sample_ctc_labels, word_errors

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata


# ----- LibriSpeech layout -----

def librivox_clips() -> list[tuple[str, str]]:
    """(file id, upper-case transcript) of pocketsphinx's LibriVox clips (Sense and Sensibility)."""
    clips = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        match = re.fullmatch(r"<s> (.*) </s> \((\S+)\)", line.strip())
        clips.append((match[2], match[1].upper()))
    return clips


@pytest.mark.skipif(not (LIBRIVOX / "transcription").is_file(),
                    reason=f"the Debian package pocketsphinx-testdata is not installed ({LIBRIVOX} is missing)")
def test_real_librivox_clips_in_librispeech_layout_read_back_exactly(tmp_path):
    clips = librivox_clips()
    assert [fileid for fileid, _ in clips] == (LIBRIVOX / "fileids").read_text().split()
    expected = {}
    chapter_dir = tmp_path / "dev-clean" / "19" / "198"  # speaker 19, chapter 198
    chapter_dir.mkdir(parents=True)
    lines = []
    for fileid, transcript in clips:
        samples, rate = soundfile.read(LIBRIVOX / f"{fileid}.wav", dtype="int16")
        utt_id = f"19-198-{int(fileid.rsplit('-', 1)[1]):04d}"
        soundfile.write(chapter_dir / f"{utt_id}.flac", samples, rate, format="FLAC", subtype="PCM_16")
        lines.append(f"{utt_id} {transcript}\n")
        expected[utt_id] = (samples, transcript)
    (chapter_dir / "19-198.trans.txt").write_text("".join(lines))

    corpus = data.read_librispeech(tmp_path / "dev-clean")
    assert [utt_id for utt_id, _, _ in corpus] == sorted(expected) and len(corpus) == 5
    for utt_id, samples, transcript in corpus:
        wav, transcript_in = expected[utt_id]
        assert transcript == transcript_in and samples.dtype == np.float32
        assert len(samples) == len(wav) and np.array_equal(np.round(samples * 32768).astype(np.int16), wav)
    assert corpus[1][2] == "HE WAS NOT AN ILL DISPOSED YOUNG MAN" and len(corpus[1][1]) == 47840


def write_chapter(root: Path, lines: list[str], speaker: str = "7", chapter: str = "12") -> Path:
    folder = root / speaker / chapter
    folder.mkdir(parents=True)
    for line in lines:
        soundfile.write(folder / f"{line.split()[0]}.flac", np.zeros(1600), data.SAMPLE_RATE, subtype="PCM_16")
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(line + "\n" for line in lines))
    return folder / f"{speaker}-{chapter}.trans.txt"


@pytest.mark.parametrize("line", ["7-12-0002", "7-12-0002 ", "7-12-2 HELLO", "8-12-0002 HELLO"])
def test_a_malformed_transcript_line_is_named_with_its_file(tmp_path, line):
    trans = write_chapter(tmp_path, ["7-12-0000 FINE", "7-12-0001 ALSO FINE"])
    trans.write_text(trans.read_text() + line + "\n")
    with pytest.raises(UserInputError, match=re.escape(f"{trans}:3")):
        data.read_librispeech(tmp_path)


def test_a_missing_or_wrong_rate_flac_is_named(tmp_path):
    trans = write_chapter(tmp_path, ["7-12-0000 FINE"])
    (trans.parent / "7-12-0000.flac").unlink()
    with pytest.raises(UserInputError, match="7-12-0000.flac"):
        data.read_librispeech(tmp_path)
    soundfile.write(trans.parent / "7-12-0000.flac", np.zeros(800), 8000, subtype="PCM_16")
    with pytest.raises(UserInputError, match="7-12-0000.flac is not mono 16000 Hz"):
        data.read_librispeech(tmp_path)
    with pytest.raises(UserInputError, match="holds no LibriSpeech transcripts"):
        data.read_librispeech(tmp_path / "7")


# ----- text and corpus -----

def test_verses_are_normalised_to_librispeech_transcripts():
    assert data.normalise("And God said, Let there be light: and there was light.") == (
        "AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT")
    assert data.normalise("the burnt-offering of the \\nd LORD’s house") == "THE BURNT OFFERING OF THE LORD'S HOUSE"
    assert data.normalise("¶ Cæsar (the 2nd) spake—") == "CAESAR THE ND SPAKE"
    with pytest.raises(UserInputError, match=r"\['!'\]"):
        data.encode("HELLO!")
    assert data.decode(data.encode("IT'S A B")) == "IT'S A B" and data.encode("A B").tolist() == [3, 1, 4]


def fake_verses(chapters: int = 40) -> list[tuple[str, int, int, str]]:
    words = "the lord spake unto moses in the wilderness of sinai saying".split()
    return [("Exodus", c, v, " ".join(words[: 3 + (c + v) % 8]) + f", and {v}.") for c in range(1, chapters + 1)
            for v in (1, 2)]


def test_utterances_split_by_chapter_with_deterministic_voices(monkeypatch):
    monkeypatch.setattr(data, "NUM_UTTERANCES", {"train": 6, "validation": 2, "test": 2})
    utterances = data.select_utterances(fake_verses())
    assert utterances == data.select_utterances(fake_verses())
    chapters = {split: {u.chapter for u in utterances if u.split == split} for split in data.SPLITS}
    assert chapters["validation"] <= {8, 28} and chapters["test"] <= {18, 38}
    assert not chapters["train"] & (chapters["validation"] | chapters["test"])
    assert [sum(u.split == s for u in utterances) for s in data.SPLITS] == [6, 2, 2]
    for u in utterances:
        assert data.MIN_WORDS <= len(u.transcript.split()) <= data.MAX_WORDS
        assert u.voice.split("+")[0] in data.VOICES and u.rate in data.RATES and u.pitch in data.PITCHES
        assert re.fullmatch(r"1[0-7]\d-\d+-000[12]", u.utt_id)
    monkeypatch.setattr(data, "NUM_UTTERANCES", {"train": 6, "validation": 5, "test": 2})
    with pytest.raises(UserInputError, match="only 4 validation sentences"):
        data.select_utterances(fake_verses())


def write_imp(data_dir: Path, verses: list[tuple[str, int, int, str]]) -> None:
    """A SWORD imp export (the format `mod2imp` prints) where kjv_lm's loader looks for a local copy."""
    text = "".join(f"$$$Exodus {c}:{v}\n{t}\n" for _, c, v, t in verses)
    (data_dir / "kjv_lm").mkdir(parents=True)
    (data_dir / "kjv_lm" / "engKJV2006eb.imp").write_text("$$$[ Module Heading ]\n" + text)


@pytest.fixture
def tiny_corpus(monkeypatch):
    monkeypatch.setattr(data, "NUM_UTTERANCES", {"train": 4, "validation": 2, "test": 2})


def test_prepare_builds_a_librispeech_corpus_with_features_deterministically(tmp_path, tiny_corpus):
    write_imp(tmp_path / "a", fake_verses())
    root = data.prepare(tmp_path / "a")
    assert sorted(p.name for p in root.iterdir()) == [
        "features", "manifest.json", "test", "train", "validation", "voices.txt"]
    expected = {u.utt_id: u for u in data.select_utterances(fake_verses())}
    for split in data.SPLITS:
        corpus = data.read_librispeech(root / split)
        features = data.read_features(root, split)
        assert [utt_id for utt_id, _, _ in corpus] == features["utt_ids"].tolist()
        for (utt_id, samples, transcript), frames in zip(corpus, features["lengths"]):
            assert expected[utt_id].split == split and expected[utt_id].transcript == transcript
            assert 0.5 < len(samples) / data.SAMPLE_RATE < 10 and np.abs(samples).max() > 0.05
            assert frames == 1 + (len(samples) - data.N_FFT) // data.HOP_LENGTH
        assert features["transcripts"].tolist() == [t for _, _, t in corpus]
        assert features["features"].shape == (features["lengths"].sum(), data.N_MELS)
    digest = data.corpus_hash(root)
    assert data.prepare(tmp_path / "a") == root and data.corpus_hash(root) == digest  # reused as it is
    write_imp(tmp_path / "b", fake_verses())
    assert data.corpus_hash(data.prepare(tmp_path / "b")) == digest  # espeak-ng and the pipeline are deterministic
    assert not [p for p in tmp_path.rglob(".*") if p.name.startswith(".espeak")]  # no leftover build folders

    splits, data_hash = Workload(tmp_path / "a").read_splits()
    assert data_hash == data.corpus_hash(root / "features")
    train = splits["train"]
    assert train["inputs"].dtype == np.float16 and train["inputs"].shape[2] == data.N_MELS
    frames = np.concatenate([x[:n] for x, n in zip(train["inputs"], train["input_lengths"])]).astype(np.float32)
    np.testing.assert_allclose(frames.mean(0), 0, atol=1e-2)
    np.testing.assert_allclose(frames.std(0), 1, atol=1e-2)
    assert all(not x[n:].any() for x, n in zip(train["inputs"], train["input_lengths"]))
    test_ids = data.read_features(root, "test")["utt_ids"]  # in corpus order: speaker, chapter, utterance
    assert [data.decode(t) for t in splits["test"]["targets"]] == [expected[i].transcript for i in test_ids]


def test_missing_espeak_names_the_debian_package(tmp_path, monkeypatch, tiny_corpus):
    write_imp(tmp_path, fake_verses())
    monkeypatch.setattr(data, "ESPEAK", "espeak-ng-not-installed")
    with pytest.raises(DataMissingError, match="install the Debian package espeak-ng"):
        data.prepare(tmp_path)
    assert not (tmp_path / data.NAME).exists()


def test_espeak_ng_output_is_deterministic():
    utterance = data.Utterance("train", 100, 1, 1, "IN THE BEGINNING", "en-gb-scotland+f2", 150, 40)
    first, second = data.synthesise(utterance), data.synthesise(utterance)
    assert first.dtype == np.float32 and np.array_equal(first, second) and 0.5 < len(first) / data.SAMPLE_RATE < 3


# ----- CTC and WER -----

def test_ctc_loss_by_hand_and_against_torch():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]])  # 2 frames, classes (blank, a, b)
    log_probs = probs.log()
    # Label "a" in 2 frames: paths aa, a-, -a.
    by_hand = -math.log(0.3 * 0.6 + 0.3 * 0.1 + 0.5 * 0.6)
    for loss in (ctc_nll, ctc_loss):
        value = loss(log_probs, torch.tensor([[1]]), torch.tensor([2]), torch.tensor([1]))
        assert value.item() == pytest.approx(by_hand, rel=1e-6)
    # "aa" needs a blank between the two a's: 3 frames at least; 2 frames are infeasible and count 0.
    assert ctc_nll(log_probs, torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([2])).item() == 0.0

    torch.manual_seed(0)
    batch, frames, classes, labels = 6, 40, 29, 15
    logits = torch.randn(batch, frames, classes, dtype=torch.float64, requires_grad=True)
    target_lengths = torch.tensor([0, 1, 15, 7, 12, 15])
    targets = torch.randint(1, classes, (batch, labels)) * (torch.arange(labels) < target_lengths[:, None])
    targets[2, 3:6] = 5  # repeated labels
    input_lengths = torch.tensor([40, 3, 33, 40, 20, 10])  # the last is infeasible: 15 labels in 10 frames
    reference = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, input_lengths, target_lengths,
                           reduction="none", zero_infinity=True)
    mine = ctc_nll(logits.log_softmax(-1), targets, input_lengths, target_lengths)
    torch.testing.assert_close(mine, reference)
    assert mine[5] == 0 and mine[0] > 0
    (g_ref,) = torch.autograd.grad(reference.sum(), logits)
    (g_mine,) = torch.autograd.grad(mine.sum(), logits)
    torch.testing.assert_close(g_mine, g_ref)


def test_ctc_loss_has_hessian_vector_products():
    torch.manual_seed(1)
    logits = torch.randn(3, 12, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 2], [3, 0, 0], [5, 4, 0]])
    input_lengths, target_lengths = torch.tensor([12, 9, 5]), torch.tensor([3, 1, 2])
    probe = torch.randn_like(logits)

    def hvp(loss):
        (g,) = torch.autograd.grad(loss(logits.log_softmax(-1), targets, input_lengths, target_lengths).sum(), logits,
                                   create_graph=True)
        return torch.autograd.grad((g * probe).sum(), logits)[0]

    fast = hvp(ctc_loss)
    torch.testing.assert_close(fast, hvp(ctc_nll))
    # A finite difference of the gradient along the probe.
    eps = 1e-6

    def grad_at(x):
        x = x.detach().requires_grad_()
        return torch.autograd.grad(ctc_loss(x.log_softmax(-1), targets, input_lengths, target_lengths).sum(), x)[0]

    torch.testing.assert_close(fast, (grad_at(logits + eps * probe) - grad_at(logits - eps * probe)) / (2 * eps),
                               rtol=1e-4, atol=1e-6)


def test_greedy_decoding_collapses_repeats_and_drops_blanks_and_padding():
    a, b, space, blank = 3, 4, 1, 0  # ids of A, B, space and the CTC blank
    best = [[a, a, blank, a, space, b, b, blank, b, a], [blank, blank, blank, blank, blank, blank, b, b, b, b]]
    logits = F.one_hot(torch.tensor(best), 29).float()
    paddings = torch.tensor([[0.0] * 9 + [1.0], [0.0] * 6 + [1.0] * 4])
    assert greedy_decode(logits, paddings) == ["AA BB", ""]


def test_sampled_labels_follow_the_ctc_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 3)  # 3 frames, classes (blank, a, b)
    n = 20_000
    samples = sample_ctc_labels(logits.expand(n, 3, 3), torch.zeros(n, 3))
    assert samples.shape[1] == 3 and samples.dtype == torch.long
    counts: dict[tuple[int, ...], int] = {}
    for row in samples.tolist():
        key = tuple(i for i in row if i)
        counts[key] = counts.get(key, 0) + 1
    assert sum(counts.values()) == n and (1, 1) in counts and () in counts  # "aa": only the path a-a
    log_probs = logits.log_softmax(-1)
    for labels, count in counts.items():
        target = torch.tensor([labels or (0,)])[:, : max(len(labels), 1)]
        probability = math.exp(-ctc_nll(log_probs, target, torch.tensor([3]), torch.tensor([len(labels)])).item())
        assert count / n == pytest.approx(probability, abs=0.015), labels
    padded = sample_ctc_labels(torch.tensor([[[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]]), torch.tensor([[0.0, 1.0]]))
    assert padded.tolist() == [[1]]  # the padded frame's "b" is not sampled


def test_word_error_rate_by_hand_and_against_jiwer():
    references = ["THE CAT SAT ON THE MAT", "IN THE BEGINNING", "LET THERE BE LIGHT"]
    hypotheses = ["THE BAT SAT ON MAT", "IN THE BEGINNING", "LET THERE BE BE LIGHT AGAIN"]
    # 1 substitution + 1 deletion; nothing; 2 insertions: 4 errors in 13 words.
    assert word_errors(references, hypotheses) == (4, 13)
    assert 4 / 13 == pytest.approx(jiwer.wer(references, hypotheses))
    assert word_errors(["A B"], [""]) == (2, 2)


def test_model_output_and_parameter_types():
    workload = load_workload("espeak_speech", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(0)
    batch = {"inputs": torch.randn(2, 50, 80).half(), "input_lengths": torch.tensor([50, 21])}
    (logits, paddings), _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
    assert logits.shape == (2, 13, 29) and paddings.sum(1).tolist() == [0, 13 - 6]  # ceil(21 / 4) = 6 frames
    alone = {"inputs": batch["inputs"][1:, :21], "input_lengths": batch["input_lengths"][1:]}
    (logits_alone, _), _ = workload.model_fn(model, alone, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
    torch.testing.assert_close(logits[1:, :6], logits_alone, rtol=1e-4, atol=1e-4)  # padding is never seen
    types = workload.model_params_types
    T = spec.ParameterType
    assert types["blocks.0.attention.qkv.weight"] == T.ATTENTION_QKV
    assert types["blocks.2.attention.out.bias"] == T.ATTENTION_BIAS
    assert types["subsampling.conv1.weight"] == types["blocks.1.convolution.depthwise.weight"] == T.CONV_WEIGHT
    assert types["blocks.0.ln.weight"] == T.LAYER_NORM_SCALE and workload.is_output_params("head.weight")


def test_loss_is_per_target_character_and_recorded_for_training():
    workload = load_workload("espeak_speech", "pytorch", DATA_DIR)
    logits = torch.randn(2, 10, 29, requires_grad=True)
    paddings = torch.tensor([[0.0] * 10, [0.0] * 6 + [1.0] * 4])
    targets = torch.tensor([[3, 4, 5], [6, 0, 0]])
    out = workload.loss_fn(targets, (logits, paddings))
    per_example = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, torch.tensor([10, 6]),
                             torch.tensor([3, 1]), reduction="none")
    torch.testing.assert_close(out["per_example"], per_example)
    assert out["n_valid_examples"].item() == 4  # target characters
    assert taken_train_loss(workload) == pytest.approx(per_example.sum().item() / 4)
    masked = workload.loss_fn(targets, (logits, paddings), mask_batch=torch.tensor([1.0, 0.0]))
    assert masked["n_valid_examples"].item() == 3 and masked["summed"].item() == pytest.approx(per_example[0].item())


# ----- the real corpus -----

def test_nadamw_lowers_the_ctc_loss_on_the_real_corpus_and_evaluates():
    workload = load_workload("espeak_speech", "pytorch", DATA_DIR)
    splits = workload.load_splits()
    assert {s: len(v["targets"]) for s, v in splits.items()} == {"train": 3000, "validation": 300, "test": 300}
    workload.step_hint = 40  # a short schedule: warmup is over after 4 steps
    batch = next(workload._build_input_queue(0, "train", str(DATA_DIR), 8))  # the same batch every step
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 10)
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
    assert logits[0].shape[1] == (int(batch["input_lengths"].max()) + 3) // 4
    assert after < 0.8 * before, (before, after)
    workload.num_eval_train_examples = workload.num_validation_examples = workload.num_test_examples = 12
    metrics = workload.eval_model(5, model, model_state, 0, str(DATA_DIR), None, 10)
    assert set(metrics) == {f"{p}/{m}" for p in ("train", "validation", "test") for m in ("ctc_loss", "wer")}
    assert all(math.isfinite(v) for v in metrics.values()) and 0 <= metrics["validation/wer"] <= 2
