"""Images for the MRI-reconstruction workload, and their 4x-undersampled single-coil k-space.

Sources (all shipped inside installed wheels; each source goes whole into one split, so no slice
or tile of a training volume or photo appears in validation or test):

- real MR volumes from nibabel's test data (`nibabel/tests/data/`), read with nibabel; the first
  3-D volume of each file: `scaled+tlrc.HEAD` (AFNI, EPI in Talairach space, 47x54x43),
  `anatomical.nii` (T1 brain, 33x41x25), `example4d+orig.HEAD` (AFNI, EPI on anatomical.nii's
  grid), `example4d.nii.gz` (EPI brain, 128x96x24), `phantom_EPI_asc_CLEAR_2_1.PAR` (PAR/REC
  phantom, 64x64x9). Slices are taken across all three axes where the volume is thick enough,
  otherwise axially only (`volume[:, :, z].T`);
- matplotlib's sample MR slice `mpl-data/sample_data/s1045.ima.gz`: raw 256x256 uint16. Its
  values are below 256, so the high byte of every pixel is 0 and a big-endian read gives
  0..215; a little-endian read gives the same image times 256. We read big-endian;
- grayscale photos bundled with scikit-image (`skimage/data/*.png`, only files in the wheel).

Images: an MR volume is scaled to [0, 1] by its minimum and maximum; each slice is zero-padded,
centred, to a square of side max(height, width, IMAGE_SIZE) and resized to IMAGE_SIZE x
IMAGE_SIZE, so small slices keep their native resolution inside a dark background, as a scan's
field of view does (upsampling them instead gives blurred images whose zero-filled
reconstruction is already hard to beat). A photo is scaled to [0, 1] (uint8 / 255),
halved by 2x2 block means, and cut into IMAGE_SIZE tiles with stride TILE_STRIDE (training
photos: TRAIN_TILE_STRIDE). Every training image comes in its 8 orientations (rotations by
multiples of 90 degrees, and their transposes), each with its own mask: more training examples,
and structures that meet the column mask in both directions. Images whose zero-filled
reconstruction is nearly constant (standard deviation below MIN_STD, e.g. black sky) are dropped.

Validation holds MR slices only, so the target is an MR reconstruction quality; the photos
(textures, scenes, text) add variety to training, and two of them go to test.

k-space and model inputs follow AlgoPerf's fastmri input pipeline
(mlcommons/algorithmic-efficiency, `algoperf/workloads/fastmri/input_pipeline.py`): centred
orthonormal 2-D FFT; a column mask of fastMRI's RandomMaskFunc with center_fractions=[0.08],
accelerations=[4] (`algoperf/workloads/fastmri/workload.py`): the central int(W * 0.08) columns
always, every other column with probability (W / 4 - low) / (W - low); the zero-filled inverse
FFT's magnitude, normalised by its own mean and standard deviation and clipped to [-6, 6]; the
target image normalised by the same mean and std and clipped the same way. Each example keeps
`mean`, `std` and `volume_max` (the maximum of its volume or photo, fastMRI's per-volume `max`)
for SSIM. Masks are drawn once, at prepare time, from a seeded generator per split.

`prepare(data_dir)` writes `data_dir/mri_reconstruction/`: one `.npy` file per split and array
and `manifest.json` (sources, counts, settings, file hashes), written last.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from harness.atomic_directory import atomic_directory
from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_bytes, atomic_write_text

NAME = "mri_reconstruction"
FORMAT_VERSION = 2  # bump when the prepared arrays change, so old copies are rebuilt
SPLITS = ("train", "validation", "test")
ARRAYS = ("inputs", "targets", "mean", "std", "volume_max", "masks", "source")
IMAGE_SIZE = 64
TILE_STRIDE = 32  # validation and test photos
TRAIN_TILE_STRIDE = 16  # training photos: more, overlapping tiles
MIN_STD = 0.01
CENTER_FRACTION = 0.08  # AlgoPerf fastmri: center_fractions = (0.08,)
ACCELERATION = 4  # AlgoPerf fastmri: accelerations = (4,)
CLIP = 6.0  # AlgoPerf fastmri input_pipeline: tf.clip_by_value(norm_image, -6, 6)
MASK_SEED = 0

# Which source goes to which split: each whole into one. MR: nibabel test files, matplotlib's slice.
AXIAL, ALL_AXES = (2,), (0, 1, 2)
NIBABEL_VOLUMES = {  # name: (split, axes sliced across)
    "scaled+tlrc.HEAD": ("train", ALL_AXES),  # EPI in Talairach space, 47x54x43
    "anatomical.nii": ("validation", ALL_AXES),  # T1, 33x41x25
    # Same 33x41x25 grid as anatomical.nii, so perhaps the same head: kept out of train.
    "example4d+orig.HEAD": ("validation", ALL_AXES),
    "example4d.nii.gz": ("test", AXIAL),  # EPI, 128x96x24: too few slices for the other axes
    "phantom_EPI_asc_CLEAR_2_1.PAR": ("test", AXIAL),
}
MATPLOTLIB_SLICES = {"s1045.ima.gz": "test"}
SKIMAGE_PHOTOS = {
    "camera.png": "train",
    "brick.png": "train",
    "moon.png": "train",
    "cell.png": "train",
    "page.png": "train",
    "grass.png": "train",
    "coins.png": "train",
    "gravel.png": "train",
    "clock_motion.png": "test",
    "text.png": "test",
}


# ----- where the sources live (tests point these elsewhere) -----
def nibabel_data_dir() -> Path:
    nibabel = _require("nibabel", "nibabel")
    return Path(nibabel.__file__).parent / "tests" / "data"


def matplotlib_sample_dir() -> Path:
    matplotlib = _require("matplotlib", "matplotlib")
    return Path(matplotlib.get_data_path()) / "sample_data"


def skimage_data_dir() -> Path:
    skimage = _require("skimage", "scikit-image")
    return Path(skimage.__file__).parent / "data"


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise DataMissingError(
            f"the {NAME} dataset is built from files shipped with {pip_name}, which is not installed; "
            f"run `pip install {pip_name}`"
        ) from exc


# A header file whose image data lives beside it: PAR/REC (Philips), HEAD/BRIK (AFNI, maybe gzipped).
DATA_FILE_SUFFIXES = {".PAR": (".REC",), ".HEAD": (".BRIK", ".BRIK.gz")}


def _source_file(directory: Path, name: str, pip_name: str) -> Path:
    """`directory / name`, after checking that it (and the data file its header names) is there."""
    path = directory / name
    data_files = [path.with_suffix(suffix) for suffix in DATA_FILE_SUFFIXES.get(path.suffix, ())]
    if not path.is_file():
        missing = str(path)
    elif data_files and not any(f.is_file() for f in data_files):
        missing = " or ".join(str(f) for f in data_files)
    else:
        return path
    raise DataMissingError(
        f"{missing} not found: the {NAME} dataset needs the data files of {pip_name}; "
        f"run `pip install --force-reinstall {pip_name}`"
    )


# ----- readers -----
def read_volume(path: Path) -> np.ndarray:
    """The first 3-D volume of a nibabel-readable file (NIfTI, PAR/REC, MGH...) as float64."""
    nibabel = _require("nibabel", "nibabel")
    try:
        volume = np.asarray(nibabel.load(path).dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ValueError...
        raise UserInputError(f"cannot read MR volume {path}: {exc}") from exc
    while volume.ndim > 3:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1 or not np.isfinite(volume).all():
        raise UserInputError(f"{path} does not hold a finite 3-D volume (shape {volume.shape})")
    return volume


def read_ima(path: Path) -> np.ndarray:
    """A raw square uint16 big-endian slice, optionally gzip-compressed, as float64."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserInputError(f"cannot read raw MR slice {path}: {exc}") from exc
    side = int(round((len(raw) / 2) ** 0.5))
    if len(raw) == 0 or side * side * 2 != len(raw):
        raise UserInputError(f"{path} is not a square raw uint16 image ({len(raw)} bytes)")
    return np.frombuffer(raw, dtype=">u2").reshape(side, side).astype(np.float64)


def read_png(path: Path) -> np.ndarray:
    """A grayscale 8-bit PNG scaled to [0, 1] (float64)."""
    from PIL import Image  # Pillow is a dependency of scikit-image and matplotlib

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "L":
                raise UserInputError(f"{path} is not an 8-bit grayscale PNG (mode {image.mode})")
            return np.asarray(image, dtype=np.float64) / 255.0
    except UserInputError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError, SyntaxError...
        raise UserInputError(f"cannot read PNG image {path}: {exc}") from exc


# ----- images -----
def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape == (size, size):
        return image
    from skimage.transform import resize

    return resize(image, (size, size), order=1, mode="edge", anti_aliasing=image.shape[0] > size)


def slices_to_images(volume: np.ndarray, axes: tuple[int, ...] = AXIAL, size: int = IMAGE_SIZE) -> np.ndarray:
    """Every slice across each of `axes` (axial: `volume[:, :, z].T`), scaled to [0, 1] by the
    volume's range, padded square, resized."""
    low, high = volume.min(), volume.max()
    volume = (volume - low) / (high - low) if high > low else np.zeros_like(volume)
    images = []
    for axis, index in ((axis, index) for axis in axes for index in range(volume.shape[axis])):
        image = np.take(volume, index, axis=axis).T
        side = max(*image.shape, size)
        top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
        square = np.zeros((side, side))
        square[top : top + image.shape[0], left : left + image.shape[1]] = image
        images.append(np.clip(_resize(square, size), 0.0, 1.0))
    return np.stack(images)


def photo_to_tiles(photo: np.ndarray, size: int = IMAGE_SIZE, stride: int = TILE_STRIDE) -> np.ndarray:
    """Tiles of the photo halved by 2x2 block means, in row-major order; (0, size, size) if too small."""
    h, w = photo.shape[0] // 2 * 2, photo.shape[1] // 2 * 2
    half = photo[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    tiles = [
        half[top : top + size, left : left + size]
        for top in range(0, half.shape[0] - size + 1, stride)
        for left in range(0, half.shape[1] - size + 1, stride)
    ]
    return np.stack(tiles) if tiles else np.zeros((0, size, size))


def dihedral(images: np.ndarray) -> np.ndarray:
    """(8N, H, W) for square (N, H, W) images: rotations by 0, 90, 180, 270 degrees, then their transposes."""
    rotations = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    return np.concatenate(rotations + [r.transpose(0, 2, 1) for r in rotations])


# ----- k-space -----
def fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (fastMRI's fft2c)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=axes), norm="ortho"), axes=axes)


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D inverse FFT over the last two axes (fastMRI's ifft2c)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes)


def sample_masks(
    num_examples: int,
    num_cols: int,
    rng: np.random.Generator,
    center_fraction: float = CENTER_FRACTION,
    acceleration: float = ACCELERATION,
) -> np.ndarray:
    """Boolean column masks (num_examples, num_cols), as AlgoPerf's fastmri input pipeline draws them.

    The int(num_cols * center_fraction) central columns (from (num_cols - low + 1) // 2) are always
    sampled; every other column with probability (num_cols / acceleration - low) / (num_cols - low),
    so that num_cols / acceleration columns are sampled on average.
    """
    low = int(num_cols * center_fraction)
    start = (num_cols - low + 1) // 2
    prob = (num_cols / acceleration - low) / (num_cols - low)
    masks = rng.random((num_examples, num_cols)) < prob
    masks[:, start : start + low] = True
    return masks


def undersample(images: np.ndarray, masks: np.ndarray, chunk: int = 256) -> dict[str, np.ndarray]:
    """fastMRI single-coil inputs and targets: the zero-filled magnitude and the image, both
    normalised by the zero-filled image's mean and (population) std and clipped to +-CLIP.
    (Images are transformed `chunk` at a time, to bound the memory of the complex arrays.)"""
    zero_filled = np.concatenate([
        np.abs(ifft2c(fft2c(images[i : i + chunk]) * masks[i : i + chunk, None, :]))
        for i in range(0, len(images), chunk)
    ])
    mean = zero_filled.mean(axis=(1, 2))
    std = zero_filled.std(axis=(1, 2))
    scale = np.where(std > 0, std, 1.0)[:, None, None]

    def normalise(x: np.ndarray) -> np.ndarray:
        return np.clip((x - mean[:, None, None]) / scale, -CLIP, CLIP).astype(np.float32)

    return {
        "inputs": normalise(zero_filled),
        "targets": normalise(images),
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
    }


# ----- the prepared dataset -----
Source = tuple[str, str, Callable[[], np.ndarray]]  # (name, split, loader of the source's images)


def _sources() -> list[Source]:
    """Every source, in a fixed order."""
    sources = []
    for name, (split, axes) in NIBABEL_VOLUMES.items():
        path = _source_file(nibabel_data_dir(), name, "nibabel")
        sources.append((f"nibabel/{name}", split, lambda p=path, a=axes: slices_to_images(read_volume(p), a)))
    for name, split in MATPLOTLIB_SLICES.items():
        path = _source_file(matplotlib_sample_dir(), name, "matplotlib")
        sources.append((f"matplotlib/{name}", split, lambda p=path: slices_to_images(read_ima(p).T[:, :, None])))
    for name, split in SKIMAGE_PHOTOS.items():
        path = _source_file(skimage_data_dir(), name, "scikit-image")
        stride = TRAIN_TILE_STRIDE if split == "train" else TILE_STRIDE
        sources.append((f"skimage/{name}", split, lambda p=path, s=stride: photo_to_tiles(read_png(p), stride=s)))
    return sources


def build(sources: list[Source]) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """Split arrays and a per-source summary from (name, split, image loader) sources.

    Arrays per split: `inputs`, `targets` (N, H, W) float32; `mean`, `std`, `volume_max` (N,)
    float32; `masks` (N, W) bool; `source` (N,) int16, an index into the summary.
    """
    per_split: dict[str, list[tuple[int, np.ndarray]]] = {split: [] for split in SPLITS}
    summary = []
    for index, (name, split, load) in enumerate(sources):
        if split not in SPLITS:
            raise ValueError(f"source {name} names split {split!r}; expected one of {SPLITS}")
        images = load()
        if split == "train":
            images = dihedral(images)
        per_split[split].append((index, images))
        summary.append({"source": name, "split": split, "images": len(images), "kept": 0})
    splits = {}
    for split_index, split in enumerate(SPLITS):
        parts = [(i, images) for i, images in per_split[split] if len(images)]
        if not parts:
            raise UserInputError(f"the {NAME} sources give no images for the {split} split")
        stack = np.concatenate([images for _, images in parts])
        source = np.concatenate([np.full(len(images), i, dtype=np.int16) for i, images in parts])
        volume_max = np.concatenate([np.full(len(images), images.max()) for _, images in parts])
        rng = np.random.default_rng([MASK_SEED, split_index])
        masks = sample_masks(len(stack), stack.shape[-1], rng)
        arrays = undersample(stack, masks)
        arrays.update(volume_max=volume_max.astype(np.float32), masks=masks, source=source)
        keep = arrays["std"] >= MIN_STD
        splits[split] = {key: value[keep] for key, value in arrays.items()}
        for i, _ in parts:
            summary[i]["kept"] = int(keep[source == i].sum())
    return splits, summary


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _manifest_ok(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format_version") == FORMAT_VERSION and all(
        (directory / name).is_file() for name in manifest.get("files", {})
    )


def prepare(data_dir: Path) -> Path:
    """Build the dataset into `data_dir/mri_reconstruction/` unless a complete copy is there; return it.

    Builds in a temporary folder beside it and renames it into place, so a crash or a concurrent
    build never leaves a half-written dataset.
    """
    target = Path(data_dir) / NAME
    if _manifest_ok(target):
        return target
    splits, summary = build(_sources())
    with atomic_directory(target, _manifest_ok) as building:
        files = {}
        for split, arrays in splits.items():
            for key in ARRAYS:
                data = _npy_bytes(arrays[key])
                atomic_write_bytes(building / f"{split}_{key}.npy", data)
                files[f"{split}_{key}.npy"] = hashlib.sha256(data).hexdigest()
        manifest = {
            "format_version": FORMAT_VERSION,
            "image_size": IMAGE_SIZE,
            "tile_stride": TILE_STRIDE,
            "center_fraction": CENTER_FRACTION,
            "acceleration": ACCELERATION,
            "clip": CLIP,
            "mask_seed": MASK_SEED,
            "sources": summary,
            "examples": {split: int(len(arrays["targets"])) for split, arrays in splits.items()},
            "files": files,
        }
        atomic_write_text(building / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def load(data_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """The prepared splits (built first if needed) and a sha256 over the prepared files' bytes."""
    directory = prepare(data_dir)
    digest = hashlib.sha256()
    splits: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data)
        if path.suffix == ".npy":
            split, key = path.stem.split("_", 1)
            splits[split][key] = np.load(io.BytesIO(data), allow_pickle=False)
    return splits, digest.hexdigest()
