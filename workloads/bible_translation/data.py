"""English -> Spanish Bible verse pairs, tokenised with a SentencePiece vocabulary trained on the train split.

Sources: the SWORD modules engKJV2006eb (King James Version, Debian `sword-text-kjv`) and spaRV1909eb
(Reina-Valera 1909, Debian `sword-text-sparv`), exported with `mod2imp <module> -s` (Debian
`libsword-utils`) by `workloads.kjv_lm.data.export_text`, which also accepts local copies
`data_dir/bible_translation/<module>.imp`. Both modules key verses as `Book C:V` with the same book
names; a verse pair is the two texts under one key (31,084 pairs). Markup is dropped: the KJV's
paragraph signs and `\\nd ` (divine-name) markers, the RV1909's Strong's numbers (`<H2416>`, `<G3588>`).

`prepare(data_dir)` builds `data_dir/bible_translation/prepared/` deterministically:
- `spm.model`: a joint English+Spanish SentencePiece BPE model trained on the train split only
  (fixed settings, one thread, every sentence, no sampling or shuffling: two prepares give identical bytes);
- `<split>.inputs.npy`, `<split>.targets.npy`: int16 token ids, each side `pieces + [EOS]` zero-padded to
  MAX_LENGTH; pairs where either side is longer are dropped;
- `<split>.tsv`: `Book C:V <tab> English <tab> Spanish` for each kept pair, in the order of the arrays
  (the Spanish column is the BLEU reference);
- `manifest.json`: sizes and the sha256 of the two exports it was built from.
Each split is stored in a fixed pseudo-random order (seed 0), so its first N pairs are a sample of
the whole Bible.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text
from workloads.kjv_lm import data as kjv

NAME = "bible_translation"
# language -> (SWORD module, Debian package that ships it)
MODULES = {"en": ("engKJV2006eb", "sword-text-kjv"), "es": ("spaRV1909eb", "sword-text-sparv")}
# Joint En+Es pieces. AlgoPerf's wmt uses 32k on a corpus ~200x larger; here 2k learned faster than 4k
# in two-minute runs (BLEU 2.2 vs 1.1 after 800 steps at batch 32).
VOCABULARY_SIZE = 2_000
MAX_LENGTH = 64  # pieces per side including EOS; keeps 90% of the pairs
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # 0 = padding, also the decoder's start token (AlgoPerf's shift_right)
# Chapter i (in canonical order) goes to validation when i % 20 == 7, to test when i % 20 == 17, else to
# train, as in workloads/kjv_lm.
CHAPTERS_PER_CYCLE, VALIDATION_CHAPTER, TEST_CHAPTER = 20, 7, 17
SPLITS = ("train", "validation", "test")
FORMAT_VERSION = 2  # bump when the prepared files change meaning, so old copies are rebuilt
_STRONGS = re.compile(r"\s*<[GH]\d+>")

Verse = tuple[str, int, int, str]  # (book, chapter, verse, text), as `kjv_lm.data.parse_imp` gives
Pair = tuple[str, str, str]  # (key "Book C:V", English, Spanish)


def clean(text: str, language: str) -> str:
    """Verse text without module markup, whitespace collapsed."""
    if language == "en":
        text = text.replace("\u00b6", " ").replace("\\nd ", "")
    else:
        text = _STRONGS.sub("", text)
    return " ".join(text.split())


def pair_verses(english: list[Verse], spanish: list[Verse]) -> list[tuple[str, int, Pair]]:
    """(book, chapter, pair) for every key present in both texts, in the English text's order."""
    by_key = {(book, chapter, verse): text for book, chapter, verse, text in spanish}
    pairs = []
    for book, chapter, verse, text in english:
        other = by_key.get((book, chapter, verse))
        en, es = clean(text, "en"), clean(other or "", "es")
        if en and es:
            pairs.append((book, chapter, (f"{book} {chapter}:{verse}", en, es)))
    return pairs


def split_by_chapter(pairs: list[tuple[str, int, Pair]]) -> dict[str, list[Pair]]:
    """Pairs per split, each chapter whole in one split (chapters counted in order of appearance)."""
    splits: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    chapter_index, previous = -1, None
    for book, chapter, pair in pairs:
        if (book, chapter) != previous:
            chapter_index, previous = chapter_index + 1, (book, chapter)
        position = chapter_index % CHAPTERS_PER_CYCLE
        split = "validation" if position == VALIDATION_CHAPTER else "test" if position == TEST_CHAPTER else "train"
        splits[split].append(pair)
    return splits


def load_exports(data_dir: Path) -> tuple[dict[str, tuple[str, Path]], dict[str, str]]:
    """Each language's imp export as (text, path), and the sha256 of each export by module name."""
    exports, hashes = {}, {}
    for language, (module, package) in MODULES.items():
        exports[language] = kjv.export_text(data_dir, module=module, folder=NAME, package=package)
        hashes[module] = hashlib.sha256(exports[language][0].encode("utf-8")).hexdigest()
    return exports, hashes


def split_exports(exports: dict[str, tuple[str, Path]]) -> dict[str, list[Pair]]:
    """The verse pairs of two imp exports, per split."""
    verses = {language: kjv.parse_imp(text, str(path)) for language, (text, path) in exports.items()}
    pairs = pair_verses(verses["en"], verses["es"])
    if not pairs:
        raise UserInputError(f"{exports['en'][1]} and {exports['es'][1]} share no verse keys")
    return split_by_chapter(pairs)


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as exc:
        raise DataMissingError(
            "the bible_translation workload needs SentencePiece; pip install sentencepiece"
        ) from exc
    return sentencepiece


def train_tokenizer(lines: list[str], vocabulary_size: int | None = None) -> bytes:
    """A serialised SentencePiece BPE model of `lines`, the same bytes for the same lines."""
    spm = _sentencepiece()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocabulary_size or VOCABULARY_SIZE, character_coverage=1.0,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,  # every sentence, in order
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, minloglevel=2,
        hard_vocab_limit=False,  # a soft limit, so that tiny corpora (tests) train too
    )
    return model.getvalue()


def load_tokenizer(model: bytes):
    """A SentencePieceProcessor for a serialised model."""
    return _sentencepiece().SentencePieceProcessor(model_proto=model)


def encode(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pieces + EOS, zero-padded to MAX_LENGTH (int16), and which texts fit in MAX_LENGTH."""
    ids = tokenizer.encode(texts)
    fits = np.array([len(x) + 1 <= MAX_LENGTH for x in ids], dtype=bool)
    array = np.full((len(texts), MAX_LENGTH), PAD_ID, dtype=np.int16)
    for row, pieces in enumerate(ids):
        if fits[row]:
            array[row, : len(pieces) + 1] = pieces + [EOS_ID]
    return array, fits


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _build(splits: dict[str, list[Pair]], hashes: dict[str, str], out: Path) -> None:
    model = train_tokenizer([text for _, en, es in splits["train"] for text in (en, es)])
    atomic_write_bytes(out / "spm.model", model)
    tokenizer = load_tokenizer(model)
    sizes = {}
    for split in SPLITS:
        pairs = splits[split]
        inputs, inputs_fit = encode(tokenizer, [en for _, en, _ in pairs])
        targets, targets_fit = encode(tokenizer, [es for _, _, es in pairs])
        keep = np.flatnonzero(inputs_fit & targets_fit)
        keep = keep[np.random.default_rng(0).permutation(len(keep))]
        atomic_write_bytes(out / f"{split}.inputs.npy", _npy_bytes(inputs[keep]))
        atomic_write_bytes(out / f"{split}.targets.npy", _npy_bytes(targets[keep]))
        atomic_write_text(out / f"{split}.tsv", "".join("\t".join(pairs[i]) + "\n" for i in keep))
        sizes[split] = {"pairs": len(pairs), "kept": len(keep)}
    manifest = {**_recipe(hashes), "splits": sizes}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _recipe(hashes: dict[str, str]) -> dict:
    """What the prepared files are made from; a copy with another recipe is rebuilt."""
    return {"format_version": FORMAT_VERSION, "sources": hashes, "vocabulary_size": VOCABULARY_SIZE,
            "max_length": MAX_LENGTH}


def _is_current(prepared: Path, hashes: dict[str, str]) -> bool:
    try:
        manifest = json.loads((prepared / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(key) == value for key, value in _recipe(hashes).items())


def prepare(data_dir: Path) -> Path:
    """The prepared dataset's folder, `data_dir/bible_translation/prepared`, built unless a copy made
    from the same exports exists. It is built in a temporary folder and renamed into place."""
    data_dir = Path(data_dir)
    exports, hashes = load_exports(data_dir)
    prepared = data_dir / NAME / "prepared"
    if _is_current(prepared, hashes):
        return prepared
    splits = split_exports(exports)
    with atomic_directory(prepared, lambda copy: _is_current(copy, hashes)) as building:
        _build(splits, hashes, building)
    return prepared


def files_hash(prepared: Path) -> str:
    """sha256 over the prepared files' names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(prepared.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def read_split(prepared: Path, split: str) -> tuple[dict[str, np.ndarray], list[Pair]]:
    """A split's arrays (int64 `inputs`, `targets`; float32 `weights` = target is not padding) and its pairs."""
    arrays = {key: np.load(prepared / f"{split}.{key}.npy").astype(np.int64) for key in ("inputs", "targets")}
    pairs = [tuple(line.split("\t")) for line in (prepared / f"{split}.tsv").read_text(encoding="utf-8").splitlines()]
    if len(pairs) != len(arrays["targets"]) or any(len(pair) != 3 for pair in pairs):
        raise UserInputError(f"{prepared / f'{split}.tsv'} does not match {split}.targets.npy; delete {prepared}")
    arrays["weights"] = (arrays["targets"] != PAD_ID).astype(np.float32)
    return arrays, pairs
