"""Fashion-MNIST in its IDX format: find it (local copy, Debian package, canonical download) and read it.

IDX (LeCun et al.): a big-endian header `0x00 0x00 <dtype code> <ndim>`, then `ndim` uint32 sizes,
then the array. Fashion-MNIST ships unsigned bytes (dtype code 0x08), optionally gzip-compressed.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from harness.errors import DataMissingError, UserInputError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
# The canonical host named in github.com/zalandoresearch/fashion-mnist's README.
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or .gz) into a numpy array; malformed files raise naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserInputError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserInputError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(raw) != header + int(np.prod(shape)):
        raise UserInputError(f"{path} is truncated or padded: header says shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _file_in(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _download(target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        with urllib.request.urlopen(f"{DOWNLOAD_URL}{stem}.gz", timeout=30) as response:
            with tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as tmp:
                shutil.copyfileobj(response, tmp)
        Path(tmp.name).replace(target_dir / f"{stem}.gz")


def locate(data_dir: Path) -> dict[str, Path]:
    """Paths of the four IDX files: `data_dir/fashion_mnist`, then Debian's copy, then a download."""
    local = data_dir / "fashion_mnist"
    for directory in (local, DEBIAN_DIR):
        found = {key: _file_in(directory, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found
    try:
        _download(local)
    except OSError as exc:
        raise DataMissingError(
            f"Fashion-MNIST not found in {local} nor {DEBIAN_DIR}, and the download from "
            f"{DOWNLOAD_URL} failed ({exc}); install the Debian package dataset-fashion-mnist "
            f"or copy the four IDX files ({', '.join(FILES.values())}, optionally .gz) into {local}"
        ) from exc
    return {key: _file_in(local, stem) for key, stem in FILES.items()}


def load_arrays(data_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """The four arrays and a sha256 of their contents."""
    arrays = {key: read_idx(path) for key, path in locate(data_dir).items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserInputError(
                f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}"
            )
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(arrays[key].tobytes())
    return arrays, digest.hexdigest()
