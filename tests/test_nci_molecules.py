"""The nci_molecules workload: preparing graphs from SMILES files (tiny ones written here, and rdkit's
bundled NCI set), whole-graph batching, the mean-average-precision metric, and learning on real data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support import nadamw_on_one_batch
from harness import spec
from harness.discovery import load_workload
from harness.errors import DataMissingError, UserInputError
from workloads.nci_molecules import data
from workloads.nci_molecules.workload import graph_batch, mean_average_precision

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"

# Ten molecules that RDKit parses, with a comment, a blank line and one SMILES it rejects (line 6).
TINY_SMI = """# tiny NCI-style file: SMILES<TAB>id
CCO\t1
CC(=O)O\t2
c1ccccc1O\t3
CCN\t4

C1CC\t5
CC(=O)OC\t6
c1ccncc1\t7
CCCl\t8
OCC(O)CO\t9
N#CC\t10
CC(=O)N\t11
"""
TINY_LINES = [2, 3, 4, 5, 8, 9, 10, 11, 12, 13]  # lines of the ten parsable molecules


def tiny_smiles() -> list[str]:
    return [line.split()[0] for line in TINY_SMI.splitlines() if line and not line.startswith("#")]


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """A data dir whose local copy `nci_molecules/tiny.smi` replaces rdkit's bundled file."""
    (tmp_path / "nci_molecules").mkdir()
    (tmp_path / "nci_molecules" / "tiny.smi").write_text(TINY_SMI)
    return tmp_path


# ----- preparing the data -----
def test_a_tiny_smiles_file_becomes_ogb_graphs_with_functional_group_labels(tiny_dir):
    from ogb.utils import smiles2graph
    from rdkit import Chem

    arrays, meta = data.load(tiny_dir)
    smiles = [s for s in tiny_smiles() if s != "C1CC"]
    assert meta["num_molecules"] == 11 and meta["num_graphs"] == 10
    assert meta["num_skipped"] == 1 and meta["skipped_lines"] == [7]
    assert arrays["source_line"].tolist() == TINY_LINES
    for g, smi in enumerate(smiles):
        graph = smiles2graph(smi)
        nodes = slice(arrays["node_offsets"][g], arrays["node_offsets"][g + 1])
        edges = slice(arrays["edge_offsets"][g], arrays["edge_offsets"][g + 1])
        np.testing.assert_array_equal(arrays["node_feat"][nodes], graph["node_feat"])
        np.testing.assert_array_equal(arrays["edge_feat"][edges], graph["edge_feat"])
        np.testing.assert_array_equal(arrays["edge_index"][:, edges], graph["edge_index"])
    assert arrays["node_offsets"][-1] == len(arrays["node_feat"]) == 3 + 4 + 7 + 3 + 5 + 6 + 3 + 6 + 3 + 4
    # Labels are the fr_* counts > 0 of the stored tasks; ethanol, phenol and glycerol hold an OH.
    functions = data.fragment_functions()
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    for j, name in enumerate(meta["task_names"]):
        assert arrays["labels"][:, j].tolist() == [int(functions[name](m) > 0) for m in mols], name
    assert "fr_Al_OH" in meta["task_names"]
    al_oh = arrays["labels"][:, meta["task_names"].index("fr_Al_OH")]
    assert [s for s, y in zip(smiles, al_oh) if y] == ["CCO", "OCC(O)CO"]
    # 10 molecules: one validation, one test, eight train.
    assert np.bincount(arrays["split"], minlength=3).tolist() == [8, 1, 1]
    assert meta["split_sizes"] == {"train": 8, "validation": 1, "test": 1}


def test_the_task_rule_keeps_groups_in_the_rate_range_and_drops_repeats(tiny_dir):
    arrays, meta = data.load(tiny_dir)
    from rdkit import Chem

    functions = data.fragment_functions()
    mols = [Chem.MolFromSmiles(s) for s in tiny_smiles() if s != "C1CC"]
    all_labels = {name: [int(fn(m) > 0) for m in mols] for name, fn in functions.items()}
    kept = meta["task_names"]
    assert kept == sorted(kept) and len(set(map(tuple, arrays["labels"].T.tolist()))) == len(kept)
    for name, column in all_labels.items():
        in_range = 0.02 <= np.mean(column) <= 0.5
        repeats_kept = any(column == all_labels[k] for k in kept if k < name)
        assert (name in kept) == (in_range and not repeats_kept), name


def test_select_tasks_on_a_hand_made_label_matrix():
    labels = np.array([[1, 1, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], dtype=np.uint8)
    # rates 0.25, 0.25 (repeat of column 0), 0 (too rare), 1 (too common), 0.5 (kept: bound inclusive)
    assert data.select_tasks(labels, ["a", "b", "c", "d", "e"]) == [0, 4]


def test_preparing_is_idempotent_and_the_same_source_gives_the_same_hash(tiny_dir, tmp_path, monkeypatch):
    first = load_workload("nci_molecules", "pytorch", tiny_dir)
    other_dir = tmp_path / "other"
    (other_dir / "nci_molecules").mkdir(parents=True)
    (other_dir / "nci_molecules" / "copy.smi").write_text(TINY_SMI)
    second = load_workload("nci_molecules", "pytorch", other_dir)
    assert first.data_hash() == second.data_hash() and len(first.data_hash()) == 64
    # A complete copy of the same source is reused, not rebuilt.
    monkeypatch.setattr(data, "build", lambda source: pytest.fail("rebuilt a complete copy"))
    assert data.prepare(tiny_dir) == tiny_dir / "nci_molecules" / "prepared"
    monkeypatch.undo()
    # A changed source is rebuilt and hashes differently.
    (other_dir / "nci_molecules" / "copy.smi").write_text(TINY_SMI + "CCCCO\t12\n")
    third = load_workload("nci_molecules", "pytorch", other_dir)
    assert third.data_hash() != first.data_hash()
    assert len(third.load_splits()["train"]["targets"]) == 9


def test_the_bundled_file_is_used_without_a_local_copy(tmp_path, monkeypatch):
    source = tmp_path / "rdkit_data" / "first_5K.smi"
    source.parent.mkdir()
    source.write_text(TINY_SMI)
    monkeypatch.setattr(data, "bundled_source", lambda: source)
    arrays, meta = data.load(tmp_path / "data")
    assert meta["source"] == str(source) and meta["num_graphs"] == 10
    assert (tmp_path / "data" / "nci_molecules" / "prepared" / "meta.json").is_file()
    assert [p.name for p in (tmp_path / "data" / "nci_molecules").iterdir()] == ["prepared"]  # no temp left


def test_a_missing_source_or_rdkit_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "bundled_source", lambda: tmp_path / "nowhere" / "first_5K.smi")
    with pytest.raises(DataMissingError, match="pip install --force-reinstall rdkit"):
        data.prepare(tmp_path)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "rdkit", None)  # `import rdkit` now raises ImportError
    with pytest.raises(DataMissingError, match="need RDKit .*pip install rdkit ogb"):
        data.prepare(tmp_path)
    monkeypatch.undo()
    (tmp_path / "nci_molecules").mkdir()
    (tmp_path / "nci_molecules" / "tiny.smi").write_text(TINY_SMI)
    monkeypatch.setitem(sys.modules, "ogb.utils", None)
    with pytest.raises(DataMissingError, match="need ogb's smiles2graph .*pip install rdkit ogb"):
        data.prepare(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"CCO\t1\n\xff\xfe\x00garbage\n", "is not a UTF-8 SMILES file"),
        (b"# only a comment\n\n", "holds no molecules"),
        (b"name,smiles\nethanol,CCO\nwater,O\nCCO 3\n", "could not parse 3 of 4 SMILES \\(lines 1, 2, 3\\)"),
    ],
)
def test_a_malformed_smiles_file_is_named_in_the_error(tmp_path, content, message):
    (tmp_path / "nci_molecules").mkdir()
    bad = tmp_path / "nci_molecules" / "bad.smi"
    bad.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as error:
        data.prepare(tmp_path)
    assert str(bad) in str(error.value)
    assert not (tmp_path / "nci_molecules" / "prepared").exists()


def test_two_local_smiles_files_are_ambiguous(tiny_dir):
    (tiny_dir / "nci_molecules" / "second.smi").write_text(TINY_SMI)
    with pytest.raises(UserInputError, match="holds 2 .smi files"):
        data.prepare(tiny_dir)


# ----- batching and the model -----
def test_batches_hold_whole_graphs_and_each_graphs_logits_ignore_the_others(tiny_dir):
    workload = load_workload("nci_molecules", "pytorch", tiny_dir)
    train = workload.load_splits()["train"]

    def on_device(index) -> dict:
        return workload.to_device(graph_batch(train, np.asarray(index)))

    pair = on_device([5, 2])["inputs"]
    nodes = [slice(train["node_offsets"][g], train["node_offsets"][g + 1]) for g in (5, 2)]
    edges = [slice(train["edge_offsets"][g], train["edge_offsets"][g + 1]) for g in (5, 2)]
    n5 = nodes[0].stop - nodes[0].start
    np.testing.assert_array_equal(pair.nodes.cpu().numpy(), np.concatenate([train["node_feat"][s] for s in nodes]))
    np.testing.assert_array_equal(pair.edges.cpu().numpy(), np.concatenate([train["edge_feat"][s] for s in edges]))
    np.testing.assert_array_equal(  # the second graph's node indices shift by the first graph's size
        torch.stack([pair.senders, pair.receivers]).cpu().numpy(),
        np.concatenate([train["edge_index"][:, edges[0]], train["edge_index"][:, edges[1]] + n5], axis=1))
    assert pair.node_graph.tolist() == [0] * n5 + [1] * (nodes[1].stop - nodes[1].start)
    assert (pair.node_graph[pair.senders] == pair.edge_graph).all() and pair.num_graphs == 2
    # The queue: a permutation seeded with data_rng, batch_size whole graphs a batch, 2 batches an epoch.
    queue = workload._build_input_queue(3, "train", str(tiny_dir), 4)
    generator = torch.Generator().manual_seed(3)
    first_epoch, second_epoch = torch.randperm(8, generator=generator), torch.randperm(8, generator=generator)
    assert not torch.equal(first_epoch, second_epoch)
    for expected_index in (first_epoch[:4], first_epoch[4:], second_epoch[:4]):
        batch, expected = next(queue), on_device(expected_index.numpy())
        assert torch.equal(batch["targets"], expected["targets"])
        assert all(torch.equal(a, b) for a, b in zip(batch["inputs"][:-1], expected["inputs"][:-1]))
    assert batch["targets"].shape == (4, len(workload.task_names))
    model, _ = workload.init_model_fn(0)
    for g in range(8):  # a graph's logits do not depend on the graphs batched with it
        alone, _ = workload.model_fn(model, on_device([g]), None,
                                     spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
        together, _ = workload.model_fn(model, on_device([(g + 3) % 8, g, (g + 5) % 8]), None,
                                        spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
        torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-5)


def test_parameter_types_name_embeddings_layer_norms_and_the_head(tiny_dir):
    workload = load_workload("nci_molecules", "pytorch", tiny_dir)
    model, _ = workload.init_model_fn(0)
    types = workload.model_params_types
    assert set(types) == {name for name, _ in model.named_parameters()}
    assert types["atom_embedding.table.weight"] == types["bond_embedding.table.weight"] == spec.ParameterType.EMBEDDING
    assert types["steps.0.edge_mlp.1.weight"] == spec.ParameterType.LAYER_NORM_SCALE
    assert types["steps.0.edge_mlp.0.weight"] == types["head.weight"] == spec.ParameterType.WEIGHT
    assert workload.is_output_params("head.bias") and not workload.is_output_params("steps.2.global_mlp.0.weight")


# ----- the metric -----
def test_mean_average_precision_on_a_hand_computed_case():
    labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.1, 0.2], [0.7, 0.3, 0.3], [0.1, 0.2, 0.4]])
    # Task 0: positives ranked 1st and 3rd: AP = (1/1 + 2/3) / 2 = 5/6. Task 1: no positive, skipped.
    # Task 2: its positive ranked 3rd of 4: AP = 1/3. Mean: (5/6 + 1/3) / 2 = 7/12.
    assert mean_average_precision(labels, scores) == pytest.approx(7 / 12)
    assert math.isnan(mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))))


def test_mean_average_precision_matches_sklearn_on_sigmoid_probabilities():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 6)) < [0.02, 0.1, 0.3, 0.5, 0.0, 1.0]).astype(np.int64)
    logits = rng.normal(size=(200, 6)) + 1.5 * labels
    probs = 1.0 / (1.0 + np.exp(-logits))
    expected = np.mean([average_precision_score(labels[:, t], probs[:, t]) for t in range(4)])  # tasks 4, 5 skipped
    assert mean_average_precision(labels, logits) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="must be equal"):
        mean_average_precision(labels, logits[:, :3])


# ----- real data -----
def test_the_real_prepare_gives_the_documented_counts_and_splits():
    workload = load_workload("nci_molecules", "pytorch", DATA_DIR)
    splits = workload.load_splits()
    meta = data.load(DATA_DIR)[1]
    assert meta["num_molecules"] == 4_999 and meta["num_graphs"] == 4_991 and meta["num_skipped"] == 8
    assert {k: len(v["targets"]) for k, v in splits.items()} == {
        "train": workload.num_train_examples, "validation": workload.num_validation_examples,
        "test": workload.num_test_examples}
    assert len(workload.task_names) == 41 and "fr_Nhpyrrole" not in workload.task_names
    rates = np.concatenate([s["targets"] for s in splits.values()]).mean(axis=0)
    assert ((rates >= 0.02) & (rates <= 0.5)).all()


def test_eval_honours_the_example_count_and_does_not_depend_on_the_batch_size():
    workload = load_workload("nci_molecules", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(1)
    small = workload._eval_model_on_split("validation", 64, 7, model, None, 0, str(DATA_DIR))
    large = workload._eval_model_on_split("validation", 64, 256, model, None, 0, str(DATA_DIR))
    assert small == pytest.approx(large, rel=1e-5)
    batch = workload.to_device(graph_batch(workload.load_splits()["validation"], np.arange(64)))
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, 0, update_batch_norm=False)
    expected = mean_average_precision(batch["targets"].cpu().numpy(), logits.detach().cpu().numpy())
    assert large["mean_average_precision"] == pytest.approx(expected, rel=1e-5)


def test_a_few_nadamw_steps_on_real_data_lower_the_loss_and_evaluate_finitely():
    workload = load_workload("nci_molecules", "pytorch", DATA_DIR)
    workload.step_hint = 40  # a short schedule: warmup is over after 4 steps
    batch = next(workload._build_input_queue(0, "train", str(DATA_DIR), 32))  # the same batch every step: its loss must fall
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 20)
    assert after < 0.8 * before, (before, after)
    workload.num_eval_train_examples = workload.num_validation_examples = workload.num_test_examples = 64
    results = workload.eval_model(workload.eval_batch_size, model, model_state, 0, str(DATA_DIR), None, 20)
    assert set(results) == {f"{s}/{m}" for s in ("train", "validation", "test")
                            for m in ("loss", "accuracy", "mean_average_precision")}
    assert all(math.isfinite(v) for v in results.values()), results
    assert 0.0 < results["validation/mean_average_precision"] <= 1.0
