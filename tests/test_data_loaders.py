"""Dataset readers on small files in the real formats (IDX; SWORD imp), written by the tests."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.fashion_mnist import data as fashion
from workloads.kjv_lm import data as kjv
from workloads.kjv_lm.workload import SEQUENCE_LENGTH, split_by_chapter, windows


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def fake_fashion_mnist(directory, n_train=60_000, n_test=50, compress=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in fashion.FILES.items():
        write_idx(directory / (stem + (".gz" if compress else "")), arrays[key], compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, compress)
    np.testing.assert_array_equal(fashion.read_idx(path), array)


def test_truncated_or_foreign_idx_files_are_named_in_the_error(tmp_path):
    good = tmp_path / "x.gz"
    write_idx(good, np.zeros((5, 2), dtype=np.uint8))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:-3]))
    with pytest.raises(UserInputError, match="truncated.gz is truncated"):
        fashion.read_idx(truncated)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(UserInputError, match="foreign is not an unsigned-byte IDX file"):
        fashion.read_idx(foreign)


def test_a_local_copy_is_preferred_and_split_into_train_validation_test(tmp_path):
    arrays = fake_fashion_mnist(tmp_path / "fashion_mnist", compress=False)
    workload = load_workload("fashion_mnist", "pytorch", tmp_path)
    splits = workload.load_splits()
    assert {k: len(v["targets"]) for k, v in splits.items()} == {"train": 55_000, "validation": 5_000, "test": 50}
    assert splits["train"]["inputs"].shape[1:] == (1, 28, 28) and splits["train"]["inputs"].dtype == np.float32
    np.testing.assert_array_equal(splits["test"]["targets"], arrays["test_labels"])
    # Validation and train partition the official training set.
    labels = np.concatenate([splits["train"]["targets"], splits["validation"]["targets"]])
    assert np.bincount(labels, minlength=10).tolist() == np.bincount(arrays["train_labels"], minlength=10).tolist()
    assert len(workload.data_hash()) == 64


def test_missing_fashion_mnist_names_the_debian_package_and_the_download(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(fashion, "DOWNLOAD_URL", "http://127.0.0.1:9/")  # refused at once
    with pytest.raises(DataMissingError) as error:
        fashion.locate(tmp_path)
    assert "dataset-fashion-mnist" in str(error.value) and "127.0.0.1:9" in str(error.value)


IMP_SAMPLE = """$$$[ Module Heading ]

$$$Genesis 0:0
 
$$$Genesis 1:0

$$$Genesis 1:1
In the beginning God created the heaven and the earth.
$$$Genesis 1:2
And the earth was without form, and void;
and darkness was upon the face of the deep.  
$$$Genesis 2:1
Thus the heavens and the earth were finished.
$$$1 Samuel 3:10
And the LORD came, and stood, and called as at other times, Samuel, Samuel.
"""


def test_imp_export_is_parsed_into_verses_without_headings():
    verses = kjv.parse_imp(IMP_SAMPLE)
    assert verses == [
        ("Genesis", 1, 1, "In the beginning God created the heaven and the earth."),
        ("Genesis", 1, 2, "And the earth was without form, and void; and darkness was upon the face of the deep."),
        ("Genesis", 2, 1, "Thus the heavens and the earth were finished."),
        ("1 Samuel", 3, 10, "And the LORD came, and stood, and called as at other times, Samuel, Samuel."),
    ]
    with pytest.raises(UserInputError, match="no verses"):
        kjv.parse_imp("just some text\n")


def test_chapters_cycle_through_train_validation_and_test():
    verses = [("Book", c, 1, f"chapter {c}") for c in range(1, 41)]
    texts = split_by_chapter(verses)
    assert texts["validation"] == "chapter 8\nchapter 28\n"  # chapter index 7 and 27
    assert texts["test"] == "chapter 18\nchapter 38\n"
    assert texts["train"].count("\n") == 36


def test_byte_windows_are_shifted_by_one():
    text = "".join(chr(97 + i % 26) for i in range(3 * SEQUENCE_LENGTH + 5))
    w = windows(text)
    assert w["inputs"].shape == (3, SEQUENCE_LENGTH)
    np.testing.assert_array_equal(w["inputs"][:, 1:], w["targets"][:, :-1])
    assert bytes(w["inputs"][1].astype(np.uint8)).decode() == text[SEQUENCE_LENGTH : 2 * SEQUENCE_LENGTH]


def test_a_local_imp_copy_is_used_without_mod2imp(tmp_path, monkeypatch):
    monkeypatch.setattr(kjv.shutil, "which", lambda name: None)
    lines = [f"$$$Psalms {c}:{v}\nPraise ye the LORD, verse {v} of psalm {c}." for c in range(1, 61) for v in range(1, 9)]
    (tmp_path / "kjv_lm").mkdir()
    (tmp_path / "kjv_lm" / kjv.EXPORT_NAME).write_text("\n".join(lines) + "\n")
    workload = load_workload("kjv_lm", "pytorch", tmp_path)
    splits = workload.load_splits()
    assert all(len(splits[s]["inputs"]) > 0 for s in ("train", "validation", "test"))
    assert splits["train"]["inputs"].max() < 256
