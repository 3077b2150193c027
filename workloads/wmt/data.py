"""WMT17 German -> English for the `wmt` workload: download, SentencePiece, tokenise, filter, pack, once.

Sources, as AlgoPerf (`algoperf/workloads/wmt/input_pipeline.py`: TFDS wmt17_translate/de-en train,
wmt14_translate/de-en validation and test), from the Hugging Face datasets `wmt/wmt17` and `wmt/wmt14`,
config de-en: parquet files with one column `translation` = struct {de, en}; inputs = German,
targets = English. Train 5,906,184 pairs, validation (newstest2013) 3,000, test (newstest2014) 3,003.
They are read from `--source_dir` (same layout as below), else from `data_dir/wmt/source`, else
downloaded there (about 1 GB) with `huggingface_hub.snapshot_download`:

    <source>/wmt17/de-en/train-0000{0..3}-of-00004.parquet
    <source>/wmt14/de-en/validation-00000-of-00001.parquet, test-00000-of-00001.parquet

`prepare(data_dir)` builds `data_dir/wmt/prepared/`, a folder renamed into place whole:
- `spm.model`: a unigram SentencePiece model (32,000 pieces, character coverage 1.0, default ids
  unk 0 / bos 1 / eos 2) trained on the train split's first 10**7 characters, a German then an English
  line per pair, whole pairs, counted as UTF-8 bytes with newlines (AlgoPerf `tokenizer.py`
  `_dump_chars_to_textfile`, `datasets/dataset_setup.py` download_wmt). Its other options are
  SentencePiece's defaults, as AlgoPerf, with `num_threads=16` pinned: the model depends on the
  thread count (not the cores), so 16 gives the same bytes on every machine.
- every sentence becomes pieces + [EOS_ID] (AlgoPerf's tf_text tokenizer, add_eos=True); a pair whose
  longer side then exceeds MAX_LENGTH tokens is dropped, in every split (AlgoPerf's length_filter).
- `train.<key>.npy` [rows, 256]: the kept train pairs packed in source order by AlgoPerf's rule
  (`input_pipeline.pack_dataset`): pairs are taken in groups of 256; within a group a pair joins the
  current row when both its sides still fit, else the row is closed and a new one started; every
  group starts a new row. Keys `inputs`, `targets` (uint16 ids, 0 = padding), `*_position` (uint8,
  0-based inside its pair), `*_segmentation` (1, 2, ... per pair in the row, 0 on padding).
- `eval_train`, `validation`, `test` `.inputs.npy` / `.targets.npy` [N, 256] uint16: one pair per row,
  zero-padded. eval_train is NUM_EVAL_TRAIN kept train pairs drawn without replacement (seed
  EVAL_TRAIN_SEED, in drawn order); validation and test keep their files' order.
- `manifest.json`: what it was built from (source files' sizes and sha256, vocabulary size, format
  version), `sizes` (rows per split), `pairs` (source and kept pairs per split) and `content_hash`
  (sha256 over the sha256 of spm.model and of every array file, in a fixed order). The hash is computed once here;
  `read_splits` returns the stored value instead of rereading gigabytes at every trial.

Differences from AlgoPerf, on purpose: AlgoPerf packs on the fly after a 1024-pair shuffle buffer,
so the rows differ every epoch; here the train split is packed once in source order and the trial
shuffles the packed rows each epoch. AlgoPerf's eval_train is a prefix of that shuffled stream (the
first ~4,000 pairs of the train files); here it is a sample of the whole split. AlgoPerf trims a
sentence by its count of nonzero ids and marks id 0 as padding in the segmentation, which shortens
sentences holding unknown pieces (unk is also 0); here every sentence keeps its pieces and
segmentation comes from the pair boundaries. SentencePiece may order TFDS's and Hugging Face's files
differently, so the 32k model need not equal AlgoPerf's byte for byte.

Preparation runs in stages under `data_dir/wmt/work/`, each written atomically and skipped on a rerun
when present and built from the same inputs (its `recipe.json`): the download (snapshot_download
resumes), the tokenizer, one tokenised chunk of CHUNK_PAIRS pairs per `.npz` file (in parallel
worker processes), then the assembly of `prepared/`. A killed preparation rerun resumes from the
finished chunks and gives the same bytes; `work/` is removed at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import shutil
import sys
from array import array
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text, read_json

NAME = "wmt"
VOCABULARY_SIZE = 32_000  # AlgoPerf wmt/workload.py _vocab_size
MAX_LENGTH = 256  # tokens per side incl. EOS; AlgoPerf input_pipeline.get_wmt_dataset(max_length=256)
PAD_ID = 0  # AlgoPerf pads with 0 (input_pipeline.preprocess_wmt_data); also SentencePiece's unk id
EOS_ID = 2  # SentencePiece's default eos id; AlgoPerf wmt_jax/decode.py EOS_ID = 2
TOKENIZER_CHARACTERS = 10**7  # AlgoPerf dataset_setup.download_wmt max_corpus_chars
SPM_THREADS = 16  # SentencePiece's default num_threads, which AlgoPerf leaves unset
NUM_EVAL_TRAIN = 3_072  # AlgoPerf wmt/workload.py num_eval_train_examples: ceil(3000 / 128) * 128
EVAL_TRAIN_SEED = 0
PACK_GROUP_PAIRS = MAX_LENGTH  # pack_dataset packs padded_batch(batch_size=length) groups of pairs
CHUNK_PAIRS = 100_000  # pairs per tokenisation job and resume unit
FORMAT_VERSION = 1  # bump when the prepared files change meaning, so old copies are rebuilt

SOURCE_LANGUAGE, TARGET_LANGUAGE = "de", "en"  # AlgoPerf's supervised keys: inputs, targets
COLUMN = "translation"
CONFIG = "de-en"
# split -> Hugging Face dataset holding it
SOURCES = {"train": "wmt/wmt17", "validation": "wmt/wmt14", "test": "wmt/wmt14"}
# AlgoPerf wmt/workload.py num_train_examples, num_validation_examples, num_test_examples
EXPECTED_PAIRS = {"train": 5_906_184, "validation": 3_000, "test": 3_003}
SPLITS = ("train", "eval_train", "validation", "test")
SIDES = ("inputs", "targets")
TRAIN_KEYS = tuple(f"{side}{suffix}" for side in SIDES for suffix in ("", "_position", "_segmentation"))
_SHARD = re.compile(r"(?P<split>[a-z]+)-(?P<index>\d+)-of-(?P<count>\d+)\.parquet")


def prepared_dir(data_dir: Path) -> Path:
    return Path(data_dir) / NAME / "prepared"


def source_root(data_dir: Path) -> Path:
    """Where downloaded source files go: `data_dir/wmt/source`."""
    return Path(data_dir) / NAME / "source"


def _not_prepared(data_dir: Path) -> DataMissingError:
    return DataMissingError(
        f"wmt data is not prepared in {data_dir}: run python -m harness.prepare_data --workload wmt --data_dir {data_dir}"
    )


def _array_names(split: str) -> list[str]:
    return [f"{split}.{key}.npy" for key in (TRAIN_KEYS if split == "train" else SIDES)]


def _content_files() -> list[str]:
    """The prepared files the content hash covers, in its order."""
    return ["spm.model"] + [name for split in SPLITS for name in _array_names(split)]


# ----- reading -----
def read_splits(data_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], str, dict]:
    """Each split's arrays (read-only memory maps), the content hash and the manifest of a finished
    preparation; DataMissingError naming the command to run otherwise."""
    prepared = prepared_dir(data_dir)
    manifest = read_json(prepared / "manifest.json")
    if not _is_current(prepared, {"format_version": FORMAT_VERSION}) or "content_hash" not in manifest:
        raise _not_prepared(data_dir)
    splits = {split: {name.split(".")[1]: np.load(prepared / name, mmap_mode="r") for name in _array_names(split)}
              for split in SPLITS}
    return splits, manifest["content_hash"], manifest


def load_tokenizer(data_dir: Path):
    """The prepared SentencePiece model as a SentencePieceProcessor."""
    import sentencepiece

    model = prepared_dir(data_dir) / "spm.model"
    if not model.is_file():
        raise _not_prepared(data_dir)
    return sentencepiece.SentencePieceProcessor(model_file=str(model))


# ----- source files -----
def _folder(root: Path, split: str) -> Path:
    return root / SOURCES[split].split("/")[1] / CONFIG


def source_files(root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Each split's parquet shards under `root`, in shard order, for the splits whose shards
    `<split>-<i>-of-<n>.parquet` are all there; and, for each split that is not complete, what it lacks:
    the missing shards' names where its shards agree on n, else the pattern."""
    files, missing = {}, []
    for split in SOURCES:
        folder = _folder(root, split)
        shards = [(m, p) for p in sorted(folder.glob(f"{split}-*.parquet")) if (m := _SHARD.fullmatch(p.name))]
        counts = {m["count"] for m, _ in shards}
        if len(counts) != 1:
            missing.append(str(folder / f"{split}-*-of-*.parquet"))
            continue
        count = counts.pop()
        present = {int(m["index"]) for m, _ in shards}
        if present == set(range(int(count))):
            files[split] = [p for _, p in shards]
        else:
            missing += [str(folder / f"{split}-{i:0{len(count)}d}-of-{count}.parquet")
                        for i in range(int(count)) if i not in present]
    return files, missing


def _layout_hint(root: Path) -> str:
    return (f"put the parquet files of the Hugging Face datasets wmt/wmt17 ({CONFIG}/train-*) and wmt/wmt14 "
            f"({CONFIG}/validation-*, {CONFIG}/test-*) in {root}/wmt17/{CONFIG} and {root}/wmt14/{CONFIG}, "
            f"or pass --source_dir <a folder with wmt17/{CONFIG} and wmt14/{CONFIG}>")


def download_sources(root: Path) -> None:
    """Fetch (or finish fetching) the source parquet files into `root` from the Hugging Face Hub."""
    from huggingface_hub import snapshot_download

    patterns: dict[str, list[str]] = {}
    for split, dataset in SOURCES.items():
        patterns.setdefault(dataset, []).append(f"{CONFIG}/{split}-*.parquet")
    for dataset, allow in patterns.items():
        snapshot_download(repo_id=dataset, repo_type="dataset", allow_patterns=allow,
                          local_dir=root / dataset.split("/")[1])


def locate_sources(data_dir: Path, source_dir: Path | None, allow_download: bool) -> dict[str, list[Path]]:
    """The source files to prepare from: `source_dir`'s, else `data_dir/wmt/source`'s, downloaded
    there first when incomplete and `allow_download`."""
    if source_dir is not None:
        files, missing = source_files(Path(source_dir))
        if missing:
            raise DataMissingError(f"--source_dir {source_dir} lacks {', '.join(missing)}: {_layout_hint(Path(source_dir))}")
        return files
    root = source_root(data_dir)
    files, missing = source_files(root)
    if not missing:
        return files
    if not allow_download:
        raise DataMissingError(f"wmt source files are missing ({', '.join(missing)}) and downloading is off: {_layout_hint(root)}")
    try:
        download_sources(root)
    except OSError as exc:  # huggingface_hub's offline, HTTP and connection errors are OSErrors
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        raise DataMissingError(f"wmt source files are not in {root} and could not be downloaded from the "
                               f"Hugging Face Hub ({reason}): {_layout_hint(root)}") from exc
    files, missing = source_files(root)
    if missing:
        raise DataMissingError(f"the download left {', '.join(missing)} incomplete: {_layout_hint(root)}")
    return files


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except pa.ArrowException as exc:
        raise UserInputError(f"{path} is not a readable parquet file ({str(exc).strip().splitlines()[0]}): "
                             f"replace it with the Hugging Face file") from exc


def check_sources(files: dict[str, list[Path]], expected_pairs: Mapping[str, int] | None) -> dict[str, list[int]]:
    """Pairs per file, after checking every file's column and (unless None) each split's pair count."""
    import pyarrow as pa

    counts = {}
    for split, paths in files.items():
        counts[split] = []
        for path in paths:
            parquet = _parquet(path)
            schema = parquet.schema_arrow
            kind = schema.field(COLUMN).type if COLUMN in schema.names else None
            if not (kind is not None and pa.types.is_struct(kind) and {SOURCE_LANGUAGE, TARGET_LANGUAGE} <= {f.name for f in kind}):
                raise UserInputError(f"{path} is not a WMT {CONFIG} parquet file: expected a column {COLUMN!r} of "
                                     f"struct<{SOURCE_LANGUAGE}: string, {TARGET_LANGUAGE}: string>, found "
                                     f"{', '.join(f'{f.name}: {f.type}' for f in schema) or 'no columns'}")
            counts[split].append(parquet.metadata.num_rows)
        expected = (expected_pairs or {}).get(split)
        if expected is not None and sum(counts[split]) != expected:
            raise UserInputError(f"the {split} files ({', '.join(p.name for p in paths)} in {paths[0].parent}) hold "
                                 f"{sum(counts[split])} pairs, not the {expected} of {SOURCES[split]} {CONFIG}: "
                                 f"replace them with the Hugging Face files")
    return counts


def _texts(column, language: str) -> list[str]:
    import pyarrow.compute as pc

    return pc.struct_field(column, language).fill_null("").to_pylist()


def read_pairs(path: Path, start: int, stop: int) -> tuple[list[str], list[str]]:
    """German and English sentences of pairs [start, stop) of a parquet file (reading only their row groups)."""
    parquet = _parquet(path)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    ends = np.cumsum(sizes)
    groups = [i for i in range(len(sizes)) if ends[i] - sizes[i] < stop and ends[i] > start]
    table = parquet.read_row_groups(groups, columns=[COLUMN])
    column = table.column(COLUMN).combine_chunks().slice(start - (ends[groups[0]] - sizes[groups[0]]), stop - start)
    return _texts(column, SOURCE_LANGUAGE), _texts(column, TARGET_LANGUAGE)


def iter_pairs(paths: Iterable[Path], batch_pairs: int = 8192) -> Iterator[tuple[str, str]]:
    """(German, English) of every pair of the files, in file order, streamed by batches."""
    for path in paths:
        for batch in _parquet(path).iter_batches(batch_size=batch_pairs, columns=[COLUMN]):
            column = batch.column(COLUMN)
            yield from zip(_texts(column, SOURCE_LANGUAGE), _texts(column, TARGET_LANGUAGE))


def _file_digest(path: Path, bar: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def _describe_sources(files: dict[str, list[Path]]) -> dict[str, dict]:
    """`wmt17/de-en/train-...parquet` -> its size and sha256, for every source file."""
    paths = [p for split in SOURCES for p in files[split]]
    with _bar("wmt: hash sources", sum(p.stat().st_size for p in paths), unit="B", unit_scale=True) as bar:
        return {"/".join(p.parts[-3:]): {"bytes": p.stat().st_size, "sha256": _file_digest(p, bar)} for p in paths}


# ----- tokenizer -----
def tokenizer_lines(pairs: Iterable[tuple[str, str]], max_characters: int = TOKENIZER_CHARACTERS) -> Iterator[str]:
    """German then English sentence of each pair, whole pairs, until at least `max_characters` UTF-8
    bytes (a newline counted per line) are out: AlgoPerf's `_dump_chars_to_textfile`."""
    count = 0
    for pair in pairs:
        if count >= max_characters:
            return
        for text in pair:
            count += len(text.encode("utf-8")) + 1
            yield text


def train_tokenizer(lines: Iterable[str], vocabulary_size: int) -> bytes:
    """A serialised unigram SentencePiece model of `lines`; the same lines give the same bytes."""
    import sentencepiece

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="unigram", vocab_size=vocabulary_size,
            character_coverage=1.0, num_threads=SPM_THREADS, minloglevel=2,
        )
    except RuntimeError as exc:  # e.g. too little text for the vocabulary
        raise UserInputError(f"SentencePiece cannot train a {vocabulary_size}-piece model on this text: {exc}") from exc
    return model.getvalue()


def with_eos(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each sentence's pieces + [EOS_ID] concatenated (uint16), and each one's length."""
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.full(int(lengths.sum()), EOS_ID, dtype=np.uint16)
    is_piece = np.ones(len(flat), dtype=bool)
    is_piece[np.cumsum(lengths) - 1] = False
    flat[is_piece] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16, count=len(flat) - len(ids))
    return flat, lengths


def tokenize_pairs(tokenizer, sources: list[str], targets: list[str]) -> dict[str, np.ndarray]:
    """The pairs whose longer side (pieces + EOS) is at most MAX_LENGTH, as concatenated uint16 ids
    (`inputs`, `targets`) with per-pair lengths (`inputs_lengths`, `targets_lengths`)."""
    sides = {side: with_eos(tokenizer.encode(texts, out_type=int, num_threads=1))
             for side, texts in zip(SIDES, (sources, targets))}
    keep = np.maximum(sides["inputs"][1], sides["targets"][1]) <= MAX_LENGTH
    chunk = {"source_pairs": np.int64(len(sources))}
    for side, (flat, lengths) in sides.items():
        chunk[side] = flat[np.repeat(keep, lengths)]
        chunk[f"{side}_lengths"] = lengths[keep].astype(np.uint16)
    return chunk


# ----- packing -----
def packing_plan(inputs_lengths: np.ndarray, targets_lengths: np.ndarray, row_length: int = MAX_LENGTH,
                 group: int = PACK_GROUP_PAIRS) -> np.ndarray:
    """[pairs, 4] int64: each pair's row, offset of its inputs and of its targets in that row, and its
    segment number (1-based) there. A pair joins the current row when both sides still fit (used +
    length <= row_length), else starts the next row; every `group`-th pair starts a row."""
    plan = array("q")  # a Python loop over millions of pairs: compact storage, no per-item NumPy calls
    row, used_inputs, used_targets, segment = -1, 0, 0, 0
    for i, (a, b) in enumerate(zip(inputs_lengths.tolist(), targets_lengths.tolist())):
        if i % group == 0 or used_inputs + a > row_length or used_targets + b > row_length:
            row, used_inputs, used_targets, segment = row + 1, 0, 0, 0
        segment += 1
        plan.extend((row, used_inputs, used_targets, segment))
        used_inputs, used_targets = used_inputs + a, used_targets + b
    return np.frombuffer(plan, dtype=np.int64).reshape(-1, 4)


def _token_places(lengths: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the tokens of `pairs` (indices into `lengths`), in order: which of `pairs` each belongs to,
    its position inside its pair, and its index in the concatenated ids."""
    lengths = lengths.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    taken = lengths[pairs]
    owner = np.repeat(np.arange(len(pairs)), taken)
    position = np.arange(int(taken.sum())) - (np.cumsum(taken) - taken)[owner]
    return owner, position, starts[pairs][owner] + position


def write_packed(out: dict[str, np.ndarray], plan: np.ndarray, chunk: dict[str, np.ndarray]) -> None:
    """Write a chunk's pairs into the packed arrays `out` (zero-filled [rows, length]) at `plan`'s
    places (the plan rows of these pairs)."""
    for column, side in ((1, "inputs"), (2, "targets")):
        lengths = chunk[f"{side}_lengths"]
        owner, position, source = _token_places(lengths, np.arange(len(lengths)))
        rows, columns = plan[owner, 0], plan[owner, column] + position
        out[side][rows, columns] = chunk[side][source]
        out[f"{side}_position"][rows, columns] = position
        out[f"{side}_segmentation"][rows, columns] = plan[owner, 3]


def write_unpacked(out: dict[str, np.ndarray], out_rows: np.ndarray, chunk: dict[str, np.ndarray], pairs: np.ndarray) -> None:
    """Write pairs `pairs` of a chunk, one per row, into rows `out_rows` of zero-filled [N, length] arrays."""
    for side in SIDES:
        owner, position, source = _token_places(chunk[f"{side}_lengths"], pairs)
        out[side][out_rows[owner], position] = chunk[side][source]


# ----- preparation -----
def _bar(desc: str, total: int, **options) -> tqdm:
    return tqdm(total=total, desc=desc, file=sys.stderr, mininterval=1.0, **options)


def _recipe(sources: dict[str, dict], vocabulary_size: int) -> dict:
    """What the prepared files are made from; a copy made from anything else is rebuilt."""
    return {"format_version": FORMAT_VERSION, "vocabulary_size": vocabulary_size, "max_length": MAX_LENGTH,
            "tokenizer_characters": TOKENIZER_CHARACTERS, "num_eval_train": NUM_EVAL_TRAIN,
            "eval_train_seed": EVAL_TRAIN_SEED, "sources": sources}


def _matches(path: Path, recipe: dict) -> bool:
    """Whether the JSON file at `path` holds every item of `recipe`."""
    found = read_json(path)
    return all(found.get(key) == value for key, value in recipe.items())


def _is_current(prepared: Path, recipe: dict) -> bool:
    return _matches(prepared / "manifest.json", recipe) and all((prepared / n).is_file() for n in _content_files())


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold `root/.prepare.lock` (one preparation per data_dir) and clear what killed ones left behind."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".prepare.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f"another process is preparing the wmt data in {root}; wait for it to end") from None
        for leftover in itertools.chain(root.glob(".prepared.*"), (root / "work").glob("**/.*.tmp"),
                                        (root / "work").glob(".tokenizer.*")):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        yield


def _tokenizer_stage(work: Path, train_files: list[Path], recipe: dict) -> bytes:
    stage = work / "tokenizer"

    def is_current(folder: Path) -> bool:
        return _matches(folder / "recipe.json", recipe) and (folder / "spm.model").is_file()

    if not is_current(stage):
        print(f"wmt: training a {recipe['vocabulary_size']}-piece SentencePiece model on the first "
              f"{TOKENIZER_CHARACTERS:,} characters of the train split", file=sys.stderr, flush=True)
        model = train_tokenizer(tokenizer_lines(iter_pairs(train_files)), recipe["vocabulary_size"])
        with atomic_directory(stage, is_current) as building:
            (building / "spm.model").write_bytes(model)
            (building / "recipe.json").write_text(json.dumps(recipe, sort_keys=True))
    return (stage / "spm.model").read_bytes()


Job = tuple[str, Path, int, int, Path]  # split, source file, first pair, end pair, chunk file


def _jobs(files: dict[str, list[Path]], counts: dict[str, list[int]], chunk_dir: Path, chunk_pairs: int) -> list[Job]:
    """One job per `chunk_pairs` pairs of each source file, in source order."""
    return [(split, path, start, min(start + chunk_pairs, count), chunk_dir / f"{split}-{index:05d}-{start:010d}.npz")
            for split in SOURCES for index, (path, count) in enumerate(zip(files[split], counts[split]))
            for start in range(0, count, chunk_pairs)]


def _pair_count(jobs: list[Job]) -> int:
    return sum(stop - start for _, _, start, stop, _ in jobs)


_worker_tokenizer = None


def _start_worker(model: bytes) -> None:
    global _worker_tokenizer
    import sentencepiece

    _worker_tokenizer = sentencepiece.SentencePieceProcessor(model_proto=model)


def tokenize_chunk(job: Job, tokenizer) -> int:
    """Tokenise one job's pairs into its chunk file (written atomically); returns its pair count."""
    _, path, start, stop, chunk_file = job
    buffer = io.BytesIO()
    np.savez(buffer, **tokenize_pairs(tokenizer, *read_pairs(path, start, stop)))
    atomic_write_bytes(chunk_file, buffer.getvalue())
    return stop - start


def _worker_job(job: Job) -> int:
    return tokenize_chunk(job, _worker_tokenizer)


def _chunk_stage(jobs: list[Job], chunk_dir: Path, recipe: dict, model: bytes, workers: int | None) -> None:
    if not _matches(chunk_dir / "recipe.json", recipe):
        shutil.rmtree(chunk_dir, ignore_errors=True)
        atomic_write_text(chunk_dir / "recipe.json", json.dumps(recipe, sort_keys=True))
    pending = [job for job in jobs if not job[4].is_file()]
    total, left = _pair_count(jobs), _pair_count(pending)
    with _bar("wmt: tokenise", total, unit="pair", initial=total - left) as bar:
        workers = min(workers or os.cpu_count() or 1, len(pending))
        if workers <= 1:
            _start_worker(model)
            for job in pending:
                bar.update(tokenize_chunk(job, _worker_tokenizer))
            return
        spawn = multiprocessing.get_context("spawn")  # fork is unsafe once torch or JAX threads run
        # A worker that dies (out of memory) raises BrokenProcessPool here instead of hanging a Pool.
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_worker, initargs=(model,)) as pool:
            for done in as_completed([pool.submit(_worker_job, job) for job in pending]):
                bar.update(done.result())


def _load_chunk(path: Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """A chunk file's arrays (only `keys`, when given)."""
    with np.load(path) as chunk:
        return {key: chunk[key] for key in (keys or chunk.files)}


def _pack_train(out: Path, paths: list[Path]) -> tuple[int, dict[str, np.ndarray]]:
    """Pack the pairs of the train chunks `paths` into `out/train.<key>.npy`, written through memory
    maps; returns the number of rows and the eval_train sample, one pair per row."""
    lengths = [_load_chunk(path, [f"{side}_lengths" for side in SIDES]) for path in paths]
    plan = packing_plan(*(np.concatenate([part[f"{side}_lengths"] for part in lengths]) for side in SIDES))
    rows, kept = (int(plan[-1, 0]) + 1 if len(plan) else 0), len(plan)
    dtypes = {"": np.uint16, "_position": np.uint8, "_segmentation": np.min_scalar_type(int(plan[:, 3].max(initial=0)))}
    train = {f"{side}{suffix}": np.lib.format.open_memmap(out / f"train.{side}{suffix}.npy", mode="w+",
                                                          dtype=dtype, shape=(rows, MAX_LENGTH))
             for side in SIDES for suffix, dtype in dtypes.items()}
    sample = np.random.default_rng(EVAL_TRAIN_SEED).choice(kept, size=min(NUM_EVAL_TRAIN, kept), replace=False)
    eval_train = {side: np.zeros((len(sample), MAX_LENGTH), np.uint16) for side in SIDES}
    first = 0
    with _bar("wmt: pack", kept, unit="pair") as bar:
        for path in paths:
            chunk = _load_chunk(path)
            count = len(chunk["inputs_lengths"])
            write_packed(train, plan[first:first + count], chunk)
            wanted = np.flatnonzero((sample >= first) & (sample < first + count))
            write_unpacked(eval_train, wanted, chunk, sample[wanted] - first)
            first += count
            bar.update(count)
    for values in train.values():
        values.flush()
    return rows, eval_train


def _unpacked(paths: list[Path]) -> dict[str, np.ndarray]:
    """The pairs of chunks `paths`, in order, one per zero-padded row."""
    parts = [_load_chunk(path) for path in paths]
    counts = [len(part["inputs_lengths"]) for part in parts]
    arrays = {side: np.zeros((sum(counts), MAX_LENGTH), np.uint16) for side in SIDES}
    for first, count, part in zip(np.cumsum([0] + counts), counts, parts):
        write_unpacked(arrays, np.arange(first, first + count), part, np.arange(count))
    return arrays


def _assemble(out: Path, jobs: list[Job], model: bytes) -> dict:
    """Write spm.model and every split's arrays into `out`; returns the rows per split (`sizes`) and
    the source and kept pairs per source split (`pairs`)."""
    (out / "spm.model").write_bytes(model)
    chunks = {split: [job[4] for job in jobs if job[0] == split] for split in SOURCES}
    rows, eval_train = _pack_train(out, chunks["train"])
    arrays = {"eval_train": eval_train, **{split: _unpacked(chunks[split]) for split in ("validation", "test")}}
    for split, sides in arrays.items():
        for side, values in sides.items():
            np.save(out / f"{split}.{side}.npy", values, allow_pickle=False)
    sizes = {"train": rows, **{split: len(sides["inputs"]) for split, sides in arrays.items()}}
    pairs = {split: {"source": sum(int(_load_chunk(path, ["source_pairs"])["source_pairs"]) for path in paths),
                     "kept": sum(len(_load_chunk(path, ["inputs_lengths"])["inputs_lengths"]) for path in paths)}
             for split, paths in chunks.items()}
    return {"sizes": sizes, "pairs": pairs}


def content_hash(prepared: Path) -> str:
    """sha256 over the name and sha256 of spm.model and of every array file, in `_content_files` order."""
    names = _content_files()
    digest = hashlib.sha256()
    with _bar("wmt: hash prepared files", sum((prepared / n).stat().st_size for n in names), unit="B",
              unit_scale=True) as bar:
        for name in names:
            digest.update(name.encode() + b"\0" + _file_digest(prepared / name, bar).encode())
    return digest.hexdigest()


def prepare(data_dir: Path, source_dir: Path | None = None, vocabulary_size: int = VOCABULARY_SIZE,
            download: bool = True, *, expected_pairs: Mapping[str, int] | None = EXPECTED_PAIRS,
            workers: int | None = None, chunk_pairs: int = CHUNK_PAIRS) -> Path:
    """`data_dir/wmt/prepared`, built unless a copy made from the same source files exists.

    Sources come from `source_dir`, else `data_dir/wmt/source` (downloaded there when incomplete and
    `download`). `vocabulary_size` other than 32,000 is for test fixtures; `expected_pairs` (None: no
    check) are the pair counts per source split; `workers` tokenising processes (default: one per
    core); `chunk_pairs` pairs per resumable chunk. A prepared copy is kept as it is when its sources
    are gone from `data_dir` and no `source_dir` is given.
    """
    if not 0 < vocabulary_size <= 1 << 16:
        raise UserInputError(f"vocabulary_size {vocabulary_size} must be in 1..65536 (ids are stored as uint16)")
    data_dir = Path(data_dir)
    root, prepared = data_dir / NAME, prepared_dir(data_dir)
    work = root / "work"
    with _exclusive(root):
        if source_dir is None and source_files(source_root(data_dir))[1] and _is_current(
                prepared, {"format_version": FORMAT_VERSION, "vocabulary_size": vocabulary_size}):
            return prepared  # built before, its sources since deleted: nothing to compare with
        files = locate_sources(data_dir, source_dir, download)
        recipe = _recipe(_describe_sources(files), vocabulary_size)
        if _is_current(prepared, recipe):
            shutil.rmtree(work, ignore_errors=True)
            return prepared
        counts = check_sources(files, expected_pairs)
        model = _tokenizer_stage(work, files["train"], recipe)
        chunk_dir = work / "chunks"
        jobs = _jobs(files, counts, chunk_dir, chunk_pairs)
        chunk_recipe = {**recipe, "tokenizer_sha256": hashlib.sha256(model).hexdigest(), "chunk_pairs": chunk_pairs}
        _chunk_stage(jobs, chunk_dir, chunk_recipe, model, workers)
        with atomic_directory(prepared, lambda folder: _is_current(folder, recipe)) as building:
            manifest = {**recipe, **_assemble(building, jobs, model)}
            manifest["content_hash"] = content_hash(building)
            atomic_write_text(building / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    return prepared
