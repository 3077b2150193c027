"""Spoken KJV sentences: synthesised with espeak-ng, stored in LibriSpeech's layout, read back as log-mel.

Text. Verses of the King James Bible (`workloads/kjv_lm/data.py`, Debian `sword-text-kjv` and
`libsword-utils`) are cut at sentence punctuation (. ; : ? !); each piece is normalised to
LibriSpeech's transcript alphabet (upper-case A-Z, apostrophe, space: hyphens and dashes become
spaces, other punctuation and SWORD markup are dropped). A verse contributes its first piece of
MIN_WORDS..MAX_WORDS words. Chapters cycle through the splits as in `kjv_lm` (chapter index
i % 20 == 7: validation, == 17: test, else train), so validation and test sentences are unseen in
training; each split keeps NUM_UTTERANCES[split] of its candidates, evenly spaced in canonical order.

Speech. Each sentence is spoken once by espeak-ng (Debian `espeak-ng`), with a voice, voice
variant, rate and pitch derived from a hash of its verse key, resampled from espeak-ng's 22,050 Hz
to 16 kHz with a polyphase filter (`scipy.signal.resample_poly`) and stored as 16-bit FLAC.

Layout (LibriSpeech's, OpenSLR 12): `<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`
and `<speaker>-<chapter>.trans.txt` with lines `<speaker>-<chapter>-<utt> <TRANSCRIPT>`. Here the
speaker is the voice (100 + 10 * voice + variant), the chapter is the chapter's index in the Bible
(1..1189) and the utterance is the verse number. Beside the corpus, `features/<split>.npz` holds the
log-mel features of the FLAC files as read back, normalised per mel bin with the train split's mean
and standard deviation (float16, frames of all utterances concatenated), so that loading the
workload computes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text
from workloads.kjv_lm.data import load_verses

NAME = "espeak_speech"
FORMAT_VERSION = 2  # bump when anything below changes what prepare() writes
ESPEAK = "espeak-ng"
SPLITS = ("train", "validation", "test")
NUM_UTTERANCES = {"train": 3000, "validation": 300, "test": 300}
MIN_WORDS, MAX_WORDS = 4, 10
CHAPTERS_PER_CYCLE, VALIDATION_CHAPTER, TEST_CHAPTER = 20, 7, 17  # as workloads/kjv_lm

# espeak-ng 1.51's English voices (`espeak-ng --voices=en`, the gmw/ family) and voice variants
# (espeak-ng-data/voices/!v): male m1-m4, female f1-f4, or none.
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
RATES = range(120, 171)  # words per minute (`-s`; espeak-ng's default is 175): at most 170, so that
# ×4-subsampled frames (25 per second) leave CTC room for blanks between characters
PITCHES = range(30, 71)  # 0-99 (`-p`; default 50)

SAMPLE_RATE = 16_000  # LibriSpeech's
# Log-mel features: 25 ms Hann window, 10 ms hop, 80 mel bins, normalised per bin, as AlgoPerf's
# librispeech front end (algoperf/workloads/librispeech_conformer/librispeech_pytorch/preprocessor.py,
# PreprocessorConfig); its filterbank spans 125-7600 Hz, librosa's here the default 0-8000 Hz.
N_FFT = WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 80
LOG_FLOOR = 1e-6  # added to the mel power before the log: espeak-ng's silences are exact zeros

ALPHABET = " '" + "".join(chr(c) for c in range(ord("A"), ord("Z") + 1))  # CTC classes 1..28; 0 is blank
_MARKUP = re.compile(r"\\[a-z]+\*?")  # SWORD/USFM inline markers such as `\nd` (name of deity)
_SENTENCE_END = re.compile(r"[.;:?!]")
_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d{4})$")


@dataclass(frozen=True)
class Utterance:
    split: str
    speaker: int
    chapter: int
    utt: int
    transcript: str
    voice: str  # espeak-ng's -v argument, e.g. "en-gb-scotland+f2"
    rate: int
    pitch: int

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}-{self.chapter}-{self.utt:04d}"


def normalise(text: str) -> str:
    """LibriSpeech-style transcript: upper-case letters, apostrophes and single spaces."""
    text = _MARKUP.sub(" ", text)
    text = unicodedata.normalize("NFKD", text.replace("æ", "ae").replace("Æ", "AE").replace("’", "'"))
    text = re.sub(r"[-—–]", " ", text)
    text = "".join(c for c in text.upper() if c in ALPHABET)
    return " ".join(text.split())


def select_utterances(verses: list[tuple[str, int, int, str]]) -> list[Utterance]:
    """The corpus's sentences, splits and voices (see the module docstring); deterministic."""
    candidates: dict[str, list[tuple[str, int, int, str]]] = {split: [] for split in SPLITS}
    chapter_index, previous = 0, None
    for book, chapter, verse, text in verses:
        if (book, chapter) != previous:
            chapter_index, previous = chapter_index + 1, (book, chapter)
        position = (chapter_index - 1) % CHAPTERS_PER_CYCLE
        split = "validation" if position == VALIDATION_CHAPTER else "test" if position == TEST_CHAPTER else "train"
        for piece in _SENTENCE_END.split(text):
            sentence = normalise(piece)
            if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                candidates[split].append((f"{book} {chapter}:{verse}", chapter_index, verse, sentence))
                break
    utterances = []
    for split in SPLITS:
        pool, n = candidates[split], NUM_UTTERANCES[split]
        if len(pool) < n:
            raise UserInputError(
                f"the KJV text gives only {len(pool)} {split} sentences of {MIN_WORDS}-{MAX_WORDS} words; {n} are needed"
            )
        for i in range(n):
            key, chapter_index, verse, sentence = pool[i * len(pool) // n]
            h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
            h, voice = divmod(h, len(VOICES))
            h, variant = divmod(h, len(VARIANTS))
            h, rate = divmod(h, len(RATES))
            pitch = h % len(PITCHES)
            utterances.append(Utterance(
                split, 100 + 10 * voice + variant, chapter_index, verse, sentence,
                VOICES[voice] + (f"+{VARIANTS[variant]}" if VARIANTS[variant] else ""), RATES[rate], PITCHES[pitch],
            ))
    return utterances


def synthesise(utterance: Utterance) -> np.ndarray:
    """espeak-ng's rendering of the transcript, as float32 samples at SAMPLE_RATE."""
    import soundfile
    from scipy.signal import resample_poly

    command = [ESPEAK, "-v", utterance.voice, "-s", str(utterance.rate), "-p", str(utterance.pitch), "--stdout"]
    # Lower case: espeak-ng spells out some all-capital words as letters.
    result = subprocess.run([*command, utterance.transcript.lower()], capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise DataMissingError(
            f"{' '.join(command)} failed for {utterance.utt_id} ({result.stderr.decode(errors='replace').strip()}); "
            f"install the Debian package espeak-ng, whose espeak-ng-data has the voice {utterance.voice}"
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    g = math.gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)


def flac_bytes(samples: np.ndarray) -> bytes:
    """Mono 16-bit FLAC (LibriSpeech's format) of float samples in [-1, 1]."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def write_librispeech(root: Path, utterances: list[tuple[str, np.ndarray, str]]) -> None:
    """Write (utt_id, samples, transcript) triples in LibriSpeech's layout under `root`."""
    chapters: dict[tuple[str, str], list[str]] = {}
    for utt_id, samples, transcript in utterances:
        speaker, chapter, _ = utt_id.split("-")
        atomic_write_bytes(root / speaker / chapter / f"{utt_id}.flac", flac_bytes(samples))
        chapters.setdefault((speaker, chapter), []).append(f"{utt_id} {transcript}\n")
    for (speaker, chapter), lines in chapters.items():
        atomic_write_text(root / speaker / chapter / f"{speaker}-{chapter}.trans.txt", "".join(sorted(lines)))


def read_librispeech(root_dir: Path) -> list[tuple[str, np.ndarray, str]]:
    """(utt_id, float32 samples, transcript) for every utterance of a LibriSpeech-layout folder
    (one split, e.g. `LibriSpeech/dev-clean`), ordered by speaker, chapter and utterance number."""
    import soundfile

    root_dir = Path(root_dir)
    found = []
    for trans in sorted(root_dir.glob("*/*/*.trans.txt")):
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        if trans.name != f"{speaker}-{chapter}.trans.txt":
            raise UserInputError(f"{trans} is misplaced: expected {speaker}-{chapter}.trans.txt in {trans.parent}")
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            utt_id, _, transcript = line.partition(" ")
            match = _UTT_ID.match(utt_id)
            if not match or match[1] != speaker or match[2] != chapter or not transcript.strip():
                raise UserInputError(
                    f"{trans}:{number}: expected '{speaker}-{chapter}-NNNN TRANSCRIPT', got {line[:80]!r}"
                )
            flac = trans.parent / f"{utt_id}.flac"
            try:
                samples, rate = soundfile.read(flac, dtype="float32")
            except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
                raise UserInputError(f"cannot read {flac} (listed in {trans}:{number}): {exc}") from exc
            if rate != SAMPLE_RATE or samples.ndim != 1:
                raise UserInputError(f"{flac} is not mono {SAMPLE_RATE} Hz audio (rate {rate}, shape {samples.shape})")
            found.append(((int(match[1]), int(match[2]), int(match[3])), utt_id, samples, transcript.strip()))
    if not found:
        raise UserInputError(
            f"{root_dir} holds no LibriSpeech transcripts (<speaker>/<chapter>/<speaker>-<chapter>.trans.txt)"
        )
    return [item[1:] for item in sorted(found, key=lambda item: item[0])]


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, N_MELS) float32 log-mel power of 16 kHz samples; frames = 1 + (len - 400) // 160."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=samples, sr=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, window="hann",
        center=False, power=2.0, n_mels=N_MELS,
    )
    return np.log(mel + LOG_FLOOR).T.astype(np.float32)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def log_mels(corpus: list[tuple[str, np.ndarray, str]]) -> list[np.ndarray]:
    """`log_mel` of every utterance, in parallel threads."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread per worker: many threads on small matrices are ten times slower on 2 cores.
    with threadpool_limits(1), ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(log_mel, [samples for _, samples, _ in corpus]))


def bin_statistics(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each mel bin over all frames, summed in float64."""
    count = sum(len(f) for f in features)
    total = sum(f.sum(0, dtype=np.float64) for f in features)
    squares = sum(np.square(f, dtype=np.float64).sum(0) for f in features)
    mean = total / count
    return mean.astype(np.float32), np.sqrt(squares / count - mean**2).astype(np.float32)


def write_features(path: Path, corpus: list[tuple[str, np.ndarray, str]], features: list[np.ndarray],
                   mean: np.ndarray, std: np.ndarray) -> None:
    """A split's normalised log-mel features (float16, frames of all utterances concatenated), with
    their lengths, utterance ids and transcripts, and the train statistics they were normalised with."""
    atomic_write_bytes(path, _npz_bytes(
        features=((np.concatenate(features) - mean) / std).astype(np.float16),
        lengths=np.array([len(f) for f in features], dtype=np.int64),
        utt_ids=np.array([utt_id for utt_id, _, _ in corpus]),
        transcripts=np.array([transcript for _, _, transcript in corpus]),
        mean=mean, std=std,
    ))


def read_features(root: Path, split: str) -> dict[str, np.ndarray]:
    """`features` (total frames, N_MELS) float16, `lengths`, `utt_ids`, `transcripts` of a prepared split."""
    path = root / "features" / f"{split}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("features", "lengths", "utt_ids", "transcripts")}
    except (OSError, KeyError, ValueError) as exc:
        raise UserInputError(f"cannot read prepared features {path}: {exc}; delete {root} to prepare it again") from exc
    n = len(arrays["lengths"])
    if arrays["features"].shape != (arrays["lengths"].sum(), N_MELS) or len(arrays["utt_ids"]) != n:
        raise UserInputError(f"{path} is inconsistent; delete {root} to prepare it again")
    return arrays


def prepare(data_dir: Path) -> Path:
    """Build the corpus in `data_dir/espeak_speech` (or reuse a complete one) and return that path.

    Built in a temporary folder and renamed into place, so a crash never leaves a partial corpus.
    """
    root = Path(data_dir) / NAME
    if _is_complete(root):
        return root
    if shutil.which(ESPEAK) is None:
        raise DataMissingError(f"{ESPEAK} not found on PATH; install the Debian package espeak-ng")
    utterances = select_utterances(load_verses(Path(data_dir))[0])
    with atomic_directory(root, _is_complete) as building:
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            audio = list(pool.map(synthesise, utterances))
        corpora, features = {}, {}
        for split in SPLITS:
            write_librispeech(
                building / split, [(u.utt_id, a, u.transcript) for u, a in zip(utterances, audio) if u.split == split]
            )
            corpora[split] = read_librispeech(building / split)  # features of the FLAC files as stored
            features[split] = log_mels(corpora[split])
        mean, std = bin_statistics(features["train"])
        for split in SPLITS:
            write_features(building / "features" / f"{split}.npz", corpora[split], features[split], mean, std)
        atomic_write_text(building / "voices.txt", "".join(
            f"{u.utt_id} {u.voice} -s {u.rate} -p {u.pitch}\n" for u in utterances
        ))
        atomic_write_text(building / "manifest.json", json.dumps(_manifest(), indent=2, sort_keys=True) + "\n")
    return root


def _is_complete(root: Path) -> bool:
    try:
        return json.loads((root / "manifest.json").read_text()) == _manifest()
    except (OSError, ValueError):
        return False


def _manifest() -> dict:
    return {
        "format_version": FORMAT_VERSION, "num_utterances": NUM_UTTERANCES, "words": [MIN_WORDS, MAX_WORDS],
        "voices": list(VOICES), "variants": list(VARIANTS), "n_mels": N_MELS,
    }


def corpus_hash(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under `root`, in sorted order. The
    workload hashes `<prepared>/features`: what it reads, made from the FLAC corpus beside it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def encode(transcript: str) -> np.ndarray:
    """CTC class ids (1..28) of a transcript; a character outside ALPHABET raises."""
    bad = sorted(set(transcript) - set(ALPHABET))
    if bad:
        raise UserInputError(f"transcript {transcript[:60]!r} has characters {bad} outside {ALPHABET!r}")
    return np.array([ALPHABET.index(c) + 1 for c in transcript], dtype=np.int64)


def decode(ids) -> str:
    """The transcript of CTC class ids (blank 0 and padding are skipped)."""
    return "".join(ALPHABET[i - 1] for i in ids if i > 0)
