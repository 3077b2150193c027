"""The MRI-reconstruction workload: prepare on tiny files in the real formats (NIfTI, PNG, raw
.ima), fastMRI's k-space mask, SSIM against skimage and hand values, and learning on real data."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support import nadamw_on_one_batch
from harness import spec
from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.mri_reconstruction import data
from workloads.mri_reconstruction.torch import UNet, ssim

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
SIZE = data.IMAGE_SIZE


def smooth_volume(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Low-frequency int16 content (no pixel far from the mean, so nothing is clipped at +-6 std)."""
    y, x = np.meshgrid(np.linspace(0, np.pi, shape[1]), np.linspace(0, np.pi, shape[0]))
    slices = [100 + 50 * np.sin((k + 1) * x) * np.cos((k + 2) * y) + rng.normal(0, 5, shape[:2])
              for k in range(int(np.prod(shape[2:])))]
    return np.stack(slices, axis=-1).reshape(shape).astype(np.int16)


@pytest.fixture
def tiny_sources(tmp_path, monkeypatch) -> dict[str, np.ndarray]:
    """A 4-D NIfTI (train), a grayscale PNG (validation) and a raw big-endian .ima.gz (test)."""
    import nibabel
    from PIL import Image

    rng = np.random.default_rng(0)
    volume = smooth_volume(rng, (SIZE, SIZE, 3, 2))
    volume[:, :, 2, 0] = 7  # a constant slice: its zero-filled image has std 0 and is dropped
    nib_dir, png_dir, mpl_dir = (tmp_path / name for name in ("nib", "png", "mpl"))
    for directory in (nib_dir, png_dir, mpl_dir):
        directory.mkdir()
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), nib_dir / "tiny.nii.gz")
    photo = smooth_volume(rng, (2 * SIZE + 1, 2 * SIZE + 33)).astype(np.uint8)  # one 64x64 tile at half size
    Image.fromarray(photo).save(png_dir / "tiny.png")
    ima = smooth_volume(rng, (SIZE, SIZE)).astype(">u2")
    (mpl_dir / "tiny.ima.gz").write_bytes(gzip.compress(ima.tobytes()))
    monkeypatch.setattr(data, "nibabel_data_dir", lambda: nib_dir)
    monkeypatch.setattr(data, "skimage_data_dir", lambda: png_dir)
    monkeypatch.setattr(data, "matplotlib_sample_dir", lambda: mpl_dir)
    monkeypatch.setattr(data, "NIBABEL_VOLUMES", {"tiny.nii.gz": ("train", data.AXIAL)})
    monkeypatch.setattr(data, "SKIMAGE_PHOTOS", {"tiny.png": "validation"})
    monkeypatch.setattr(data, "MATPLOTLIB_SLICES", {"tiny.ima.gz": "test"})
    return {"volume": volume, "photo": photo, "ima": ima}


def test_prepare_turns_tiny_real_format_files_into_normalised_examples(tmp_path, tiny_sources):
    splits, data_hash = data.load(tmp_path / "data")
    first = tiny_sources["volume"][..., 0].astype(np.float64)  # the first 3-D volume only
    scaled = (first - first.min()) / (first.max() - first.min())
    photo = tiny_sources["photo"][: 2 * SIZE, : 2 * SIZE].astype(np.float64) / 255.0
    ima = tiny_sources["ima"].astype(np.float64)
    expected = {
        # Slice 2 is constant, so dropped; training images come in 8 orientations.
        "train": data.dihedral(np.stack([scaled[:, :, 0].T, scaled[:, :, 1].T])),
        "validation": photo.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3))[None],
        "test": ((ima - ima.min()) / (ima.max() - ima.min()))[None],
    }
    for split, images in expected.items():
        arrays = splits[split]
        assert arrays["inputs"].shape == arrays["targets"].shape == images.shape, split
        assert arrays["inputs"].dtype == np.float32
        scale, shift = arrays["std"][:, None, None], arrays["mean"][:, None, None]
        np.testing.assert_allclose(arrays["targets"] * scale + shift, images, atol=1e-5)
        zero_filled = np.abs(data.ifft2c(data.fft2c(images) * arrays["masks"][:, None, :]))
        np.testing.assert_allclose(arrays["inputs"] * scale + shift, zero_filled, atol=1e-5)
        np.testing.assert_allclose(arrays["mean"], zero_filled.mean(axis=(1, 2)), rtol=1e-5)
        np.testing.assert_allclose(arrays["volume_max"], images.max(), rtol=1e-6)
    manifest = (tmp_path / "data" / data.NAME / "manifest.json").read_text()
    assert '"images": 24' in manifest and '"kept": 16' in manifest
    # The same sources prepared again elsewhere give the same bytes; a prepared copy is reused.
    assert data.load(tmp_path / "again")[1] == data_hash
    assert data.prepare(tmp_path / "data") == tmp_path / "data" / data.NAME
    assert data.load(tmp_path / "data")[1] == data_hash


def test_the_workload_reads_the_prepared_splits(tmp_path, tiny_sources):
    workload = load_workload("mri_reconstruction", "pytorch", tmp_path)
    splits = workload.load_splits()
    assert set(splits["train"]) == {"inputs", "targets", "mean", "std", "volume_max"}
    assert {split: len(arrays["targets"]) for split, arrays in splits.items()} == {"train": 16, "validation": 1,
                                                                                   "test": 1}
    assert len(workload.data_hash()) == 64


def test_a_missing_package_or_file_says_what_to_install(tmp_path, tiny_sources, monkeypatch):
    monkeypatch.setattr(data, "SKIMAGE_PHOTOS", {"camera.png": "validation"})
    with pytest.raises(DataMissingError, match="pip install --force-reinstall scikit-image"):
        data.prepare(tmp_path / "data")
    # A header without its image data: AFNI's .HEAD needs .BRIK or .BRIK.gz beside it.
    (tmp_path / "nib" / "head_only+orig.HEAD").write_text("type = string-attribute\n")
    monkeypatch.setattr(data, "SKIMAGE_PHOTOS", {})
    monkeypatch.setattr(data, "NIBABEL_VOLUMES", {"head_only+orig.HEAD": ("train", data.AXIAL)})
    with pytest.raises(DataMissingError, match=r"head_only\+orig\.BRIK or .*head_only\+orig\.BRIK\.gz not found"):
        data.prepare(tmp_path / "data")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "nibabel", None)  # `import nibabel` now raises ImportError
    with pytest.raises(DataMissingError, match="pip install nibabel"):
        data.nibabel_data_dir()
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(DataMissingError, match="pip install scikit-image"):
        data.skimage_data_dir()


def test_malformed_files_are_named_in_the_error(tmp_path):
    broken_nifti = tmp_path / "broken.nii.gz"
    broken_nifti.write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(UserInputError, match="broken.nii.gz"):
        data.read_volume(broken_nifti)
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserInputError, match="broken.png"):
        data.read_png(broken_png)
    odd_ima = tmp_path / "odd.ima.gz"
    odd_ima.write_bytes(gzip.compress(b"\x00" * 2 * 10))  # 10 pixels: not a square
    with pytest.raises(UserInputError, match="odd.ima.gz is not a square"):
        data.read_ima(odd_ima)


def test_mask_samples_a_quarter_of_the_columns_and_the_whole_centre():
    for num_cols in (64, 320):
        masks = data.sample_masks(4000, num_cols, np.random.default_rng(0))
        low = int(num_cols * 0.08)  # 5 of 64, 25 of 320 (AlgoPerf: int(num_cols * center_fraction))
        start = (num_cols - low + 1) // 2
        assert masks[:, start : start + low].all()
        assert not masks[:, :start].all(axis=0).any() and not masks[:, start + low :].all(axis=0).any()
        assert abs(num_cols / masks.sum(axis=1).mean() - 4.0) < 0.05  # acceleration 4 on average
        outside = np.concatenate([masks[:, :start], masks[:, start + low :]], axis=1)
        assert abs(outside.mean() - (num_cols / 4 - low) / (num_cols - low)) < 0.005
    same = data.sample_masks(3, 64, np.random.default_rng(7)), data.sample_masks(3, 64, np.random.default_rng(7))
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0][0], same[0][1])  # each example has its own mask


def test_slices_across_each_axis_keep_native_resolution_on_a_dark_canvas():
    rng = np.random.default_rng(1)
    volume = rng.uniform(-3, 5, (10, 20, 30))
    scaled = (volume - volume.min()) / (volume.max() - volume.min())
    images = data.slices_to_images(volume, data.ALL_AXES)
    assert images.shape == (10 + 20 + 30, SIZE, SIZE)
    # Slice 4 across axis 1 is volume[:, 4, :].T (30 x 10), centred on a 64 x 64 zero canvas.
    expected = np.zeros((SIZE, SIZE))
    expected[17:47, 27:37] = scaled[:, 4, :].T
    np.testing.assert_allclose(images[10 + 4], expected, atol=1e-12)
    np.testing.assert_allclose(images[30 + 7, 22:42, 27:37], scaled[:, :, 7].T, atol=1e-12)
    # A slice larger than the image is padded square and resized: 128 x 96 -> 128 x 128 -> 64 x 64.
    bright = np.ones((96, 128, 1))
    bright[0, 0, 0] = 0.0
    large = data.slices_to_images(bright, data.AXIAL)
    assert large.shape == (1, SIZE, SIZE)
    # Rows run along the 128 side; the 96 columns sit between 16 padded ones each side (8 after halving).
    assert large[0, 32, :7].max() == 0.0 and large[0, 32, -7:].max() == 0.0
    np.testing.assert_allclose(large[0, :, 9:-9], 1.0, atol=1e-3)


def test_dihedral_gives_the_eight_orientations_of_each_image():
    image = np.arange(9.0).reshape(1, 3, 3)
    orientations = data.dihedral(np.concatenate([image, image + 10]))
    assert orientations.shape == (16, 3, 3)
    np.testing.assert_array_equal(orientations[0], image[0])
    np.testing.assert_array_equal(orientations[1], image[0] + 10)  # one orientation of every image at a time
    np.testing.assert_array_equal(orientations[4], image[0, ::-1, ::-1])  # 180 degrees
    np.testing.assert_array_equal(orientations[8], image[0].T)
    assert len({o.tobytes() for o in orientations[::2]}) == 8  # all distinct for an asymmetric image


def test_fft_is_orthonormal_and_a_full_mask_reconstructs_the_image():
    image = np.random.default_rng(0).random((2, 16, 16))
    kspace = data.fft2c(image)
    np.testing.assert_allclose((np.abs(kspace) ** 2).sum(), (image**2).sum())
    np.testing.assert_allclose(np.abs(kspace[:, 8, 8]), image.sum(axis=(1, 2)) / 16)  # DC at the centre
    full = data.undersample(image, np.ones((2, 16), dtype=bool))
    np.testing.assert_allclose(full["inputs"], full["targets"], atol=1e-6)


def test_ssim_matches_skimage_and_hand_values():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.normal(size=(4, 40, 48)).astype(np.float32))
    outputs = targets + torch.from_numpy(rng.normal(scale=0.5, size=(4, 40, 48)).astype(np.float32))
    mean, std = torch.tensor([0.3, 0.5, 0.2, 0.4]), torch.tensor([0.1, 0.2, 0.05, 0.15])
    volume_max = torch.tensor([1.0, 2.0, 0.8, 1.0])
    ours = ssim(outputs, targets, mean, std, volume_max)
    reference = [
        structural_similarity((targets[i] * std[i] + mean[i]).double().numpy(),
                              (outputs[i] * std[i] + mean[i]).double().numpy(),
                              win_size=7, data_range=float(volume_max[i]), K1=0.01, K2=0.03,
                              use_sample_covariance=True, gaussian_weights=False)
        for i in range(4)
    ]
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
    assert 0.0 < ours.min() and ours.max() < 0.99
    ones, zeros = torch.ones(4), torch.zeros(4)
    np.testing.assert_allclose(ssim(targets, targets, mean, std, volume_max).numpy(), 1.0, atol=1e-5)
    # Constant images a and b: variances vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2.
    a, b = torch.full((1, 9, 9), 0.5), torch.full((1, 9, 9), 0.25)
    expected = (2 * 0.5 * 0.25 + 1e-4) / (0.5**2 + 0.25**2 + 1e-4)
    np.testing.assert_allclose(ssim(a, b, zeros[:1], ones[:1], ones[:1]).numpy(), [expected], rtol=1e-5)
    # volume_max 0 (a padded example in AlgoPerf) counts as data range 1.
    np.testing.assert_allclose(ssim(a, b, zeros[:1], ones[:1], zeros[:1]).numpy(), [expected], rtol=1e-5)


def test_unet_keeps_the_image_shape_and_names_its_output_layer():
    workload = load_workload("mri_reconstruction", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(0)
    assert workload.is_output_params("head.weight") and "head.weight" in workload.param_shapes
    assert workload.model_params_types["up_transpose.0.0.weight"] == spec.ParameterType.CONV_WEIGHT
    images = torch.randn(2, SIZE, SIZE)
    outputs, _ = workload.model_fn(model, {"inputs": images}, None, spec.ForwardPassMode.EVAL, 0, False)
    assert outputs.shape == images.shape
    assert UNet(channels=4)(torch.randn(1, 30, 22)).shape == (1, 30, 22)  # odd sizes are padded back


def test_real_sources_and_their_prepared_masks():
    s1045 = data.read_ima(data.matplotlib_sample_dir() / "s1045.ima.gz")
    # Big-endian: values 0..215. A little-endian read would give the same image times 256.
    assert s1045.shape == (256, 256) and 200 < s1045.max() < 256
    arrays, _ = data.load(DATA_DIR)
    sources = json.loads((DATA_DIR / data.NAME / "manifest.json").read_text())["sources"]
    for split in data.SPLITS:
        # Every example comes from a source (volume, slice or photo) assigned whole to its split.
        assert {sources[i]["split"] for i in np.unique(arrays[split]["source"])} == {split}
        masks = arrays[split]["masks"]
        assert masks[:, 30:35].all()  # int(64 * 0.08) = 5 centre columns from (64 - 5 + 1) // 2 = 30
        assert 3.6 < masks.size / masks.sum() < 4.4
        assert len(np.unique(masks, axis=0)) == len(masks)


def test_real_data_prepares_and_a_few_nadamw_steps_lower_the_loss():
    workload = load_workload("mri_reconstruction", "pytorch", DATA_DIR)
    splits = workload.load_splits()
    counts = {split: len(arrays["targets"]) for split, arrays in splits.items()}
    assert counts == {"train": workload.num_train_examples, "validation": workload.num_validation_examples,
                      "test": workload.num_test_examples}
    workload.step_hint = 20  # a short schedule: warmup is over after 2 steps
    batch = next(workload._build_input_queue(0, "train", str(DATA_DIR), 2))  # the same batch every step
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 6)
    assert after < 0.8 * before, (before, after)
    workload.num_eval_train_examples = workload.num_validation_examples = workload.num_test_examples = 8
    metrics = workload.eval_model(8, model, model_state, 0, str(DATA_DIR), None, 6)
    assert set(metrics) == {f"{p}/{m}" for p in ("train", "validation", "test") for m in ("ssim", "loss")}
    assert all(np.isfinite(v) for v in metrics.values()) and -1 <= metrics["validation/ssim"] <= 1
