"""wmt data preparation (workloads/wmt/data.py) on tiny source files in the real parquet format."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import prepare_data
from harness.errors import DataMissingError, UserInputError
from support import REPO, TOY_WORKLOAD
from workloads.wmt import data
from wmt_source import TINY_VOCABULARY, prepare_tiny, write_source


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """One preparation shared by the read-only tests: (source dir, data dir, pairs written)."""
    root = tmp_path_factory.mktemp("wmt")
    pairs = write_source(root / "source")
    prepare_tiny(root / "data", root / "source")
    return root / "source", root / "data", pairs


def fits(tokenizer, pair) -> bool:
    return max(len(ids) + 1 for ids in tokenizer.encode(list(pair))) <= data.MAX_LENGTH


def kept(tokenizer, pairs):
    return [pair for pair in pairs if fits(tokenizer, pair)]


def decode(tokenizer, ids) -> str:
    ids = [int(i) for i in ids]
    assert ids[-1] == data.EOS_ID and data.EOS_ID not in ids[:-1] and data.PAD_ID not in ids
    return tokenizer.decode(ids[:-1])


def row_texts(tokenizer, array) -> list[str]:
    """Each row's one sentence: pieces, EOS, then only padding."""
    texts = []
    for row in np.asarray(array):
        length = int((row != data.PAD_ID).sum())
        assert not row[length:].any()
        texts.append(decode(tokenizer, row[:length]))
    return texts


def prepared_bytes(data_dir: Path) -> dict[str, bytes]:
    prepared = data.prepared_dir(data_dir)
    return {path.name: path.read_bytes() for path in sorted(prepared.iterdir())}


# ----- what preparation builds -----
def test_splits_keep_the_pairs_that_fit_and_drop_the_long_ones(fixture):
    _, data_dir, pairs = fixture
    splits, content_hash, manifest = data.read_splits(data_dir)
    tokenizer = data.load_tokenizer(data_dir)
    assert tokenizer.get_piece_size() == TINY_VOCABULARY == manifest["vocabulary_size"]
    assert [tokenizer.id_to_piece(i) for i in (0, 1, 2)] == ["<unk>", "<s>", "</s>"]  # PAD_ID is unk's id, EOS_ID
    kept_train = kept(tokenizer, pairs["train"])
    assert len(pairs["train"]) - len(kept_train) == 2 and len(pairs["validation"]) - len(kept(tokenizer, pairs["validation"])) == 1
    assert manifest["pairs"] == {"train": {"source": 420, "kept": 418}, "validation": {"source": 31, "kept": 30},
                                 "test": {"source": 33, "kept": 33}}
    assert manifest["sizes"] == {split: len(arrays["inputs"]) for split, arrays in splits.items()}
    assert manifest["sizes"]["eval_train"] == len(kept_train)  # fewer than NUM_EVAL_TRAIN: all of them
    assert content_hash == manifest["content_hash"] == data.content_hash(data.prepared_dir(data_dir))
    for split in ("validation", "test"):
        expected = kept(tokenizer, pairs[split])
        assert row_texts(tokenizer, splits[split]["inputs"]) == [de for de, _ in expected]
        assert row_texts(tokenizer, splits[split]["targets"]) == [en for _, en in expected]
    eval_train = list(zip(row_texts(tokenizer, splits["eval_train"]["inputs"]),
                          row_texts(tokenizer, splits["eval_train"]["targets"])))
    assert sorted(eval_train) == sorted(kept_train) and eval_train != kept_train  # all of them, shuffled
    for arrays in splits.values():
        assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in arrays.values())


def test_packed_rows_hold_the_train_pairs_in_order_by_algoperfs_rule(fixture):
    _, data_dir, pairs = fixture
    train = data.read_splits(data_dir)[0]["train"]
    assert {key: train[key].dtype for key in data.TRAIN_KEYS} == {
        "inputs": np.uint16, "targets": np.uint16, "inputs_position": np.uint8, "targets_position": np.uint8,
        "inputs_segmentation": np.uint8, "targets_segmentation": np.uint8}
    tokenizer = data.load_tokenizer(data_dir)
    unpacked, rows_of_pairs = [], []
    for row in range(len(train["inputs"])):
        segments = {}
        for side in data.SIDES:
            tokens, position, segment = (np.asarray(train[key][row]) for key in (side, f"{side}_position", f"{side}_segmentation"))
            padding = segment == 0
            assert not tokens[padding].any() and not position[padding].any()
            assert (tokens[~padding] != data.PAD_ID).all() and padding[padding.argmax():].all() == padding.any()
            count = int(segment.max())
            assert list(np.unique(segment[~padding])) == list(range(1, count + 1))
            segments[side] = []
            for k in range(1, count + 1):
                where = np.flatnonzero(segment == k)
                assert (where == np.arange(where[0], where[0] + len(where))).all()  # contiguous, in order
                assert (position[where] == np.arange(len(where))).all()
                segments[side].append(decode(tokenizer, tokens[where]))  # ends with its EOS: never split
        assert len(segments["inputs"]) == len(segments["targets"])
        unpacked += list(zip(segments["inputs"], segments["targets"]))
        rows_of_pairs.append(len(segments["inputs"]))
    kept_train = kept(tokenizer, pairs["train"])
    assert unpacked == kept_train
    # Greedy within groups of 256 pairs: a row ends only at a group boundary or when the next pair overflows it.
    lengths = [tuple(len(ids) + 1 for ids in tokenizer.encode(list(pair))) for pair in kept_train]
    first = 0
    for count in rows_of_pairs[:-1]:
        used = np.sum(lengths[first:first + count], axis=0)
        nxt = first + count
        assert nxt % data.PACK_GROUP_PAIRS == 0 or (used + lengths[nxt] > data.MAX_LENGTH).any()
        assert all(i % data.PACK_GROUP_PAIRS for i in range(first + 1, nxt))
        first = nxt
    assert 256 < len(kept_train) and len(rows_of_pairs) < len(kept_train) / 2


def test_packing_gives_algoperfs_documented_example():
    """input_pipeline.pack_dataset's docstring: two pairs packed into one row of length 10."""
    chunk = {"inputs": np.array([8, 7, 1, 2, 3, 4, 1], np.uint16), "inputs_lengths": np.array([3, 4]),
             "targets": np.array([4, 1, 5, 6, 1], np.uint16), "targets_lengths": np.array([2, 3])}
    plan = data.packing_plan(chunk["inputs_lengths"], chunk["targets_lengths"], row_length=10)
    out = {key: np.zeros((1, 10), np.int64) for key in data.TRAIN_KEYS}
    data.write_packed(out, plan, chunk)
    expected = {
        "inputs": [8, 7, 1, 2, 3, 4, 1, 0, 0, 0], "inputs_segmentation": [1, 1, 1, 2, 2, 2, 2, 0, 0, 0],
        "inputs_position": [0, 1, 2, 0, 1, 2, 3, 0, 0, 0], "targets": [4, 1, 5, 6, 1, 0, 0, 0, 0, 0],
        "targets_segmentation": [1, 1, 2, 2, 2, 0, 0, 0, 0, 0], "targets_position": [0, 1, 0, 1, 2, 0, 0, 0, 0, 0]}
    assert {key: out[key][0].tolist() for key in expected} == expected


@pytest.mark.parametrize("inputs, targets, group, rows", [
    ([1] * 7, [1] * 7, 3, [0, 0, 0, 1, 1, 1, 2]),  # every group starts a row
    ([6, 4, 1, 5], [1, 1, 1, 1], 256, [0, 0, 1, 1]),  # inputs side full (6 + 4 = 10), third pair overflows
    ([1, 1, 1], [9, 2, 1], 256, [0, 1, 1]),  # the targets side alone decides
])
def test_packing_plan_rows(inputs, targets, group, rows):
    plan = data.packing_plan(np.array(inputs), np.array(targets), row_length=10, group=group)
    assert plan[:, 0].tolist() == rows


def test_with_eos_appends_eos_to_each_sentence():
    flat, lengths = data.with_eos([[5, 6], [], [7]])
    assert flat.tolist() == [5, 6, 2, 2, 7, 2] and lengths.tolist() == [3, 1, 2]


def test_tokenizer_text_is_whole_pairs_up_to_the_byte_budget():
    pairs = [("ä" * 4, "a"), ("b", "c")]  # 9 + 2 UTF-8 bytes with newlines, 5 + 2 characters
    assert list(data.tokenizer_lines(pairs, max_characters=8)) == ["ä" * 4, "a"]
    assert list(data.tokenizer_lines(pairs, max_characters=12)) == ["ä" * 4, "a", "b", "c"]


def test_tokenizer_training_is_deterministic(fixture):
    _, data_dir, pairs = fixture
    lines = list(data.tokenizer_lines(pairs["train"]))
    first = data.train_tokenizer(lines, TINY_VOCABULARY)
    assert first == data.train_tokenizer(lines, TINY_VOCABULARY)
    assert first == (data.prepared_dir(data_dir) / "spm.model").read_bytes()


# ----- determinism, resume, reuse -----
def test_worker_count_and_chunking_do_not_change_the_bytes(fixture, tmp_path):
    source, data_dir, _ = fixture
    prepare_tiny(tmp_path, source, workers=2, chunk_pairs=100)
    assert prepared_bytes(tmp_path) == prepared_bytes(data_dir)
    assert not (tmp_path / "wmt" / "work").exists()


def test_a_prepared_copy_is_reused_and_rebuilt_when_its_sources_change(fixture, tmp_path):
    source, data_dir, pairs = fixture
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    prepare_tiny(tmp_path / "data", copy)
    manifest = data.prepared_dir(tmp_path / "data") / "manifest.json"
    before = manifest.stat().st_mtime_ns
    prepare_tiny(tmp_path / "data", copy)
    assert manifest.stat().st_mtime_ns == before
    write_source(copy, test_pairs=pairs["test"][:-1])
    prepare_tiny(tmp_path / "data", copy)
    rebuilt = json.loads(manifest.read_text())
    assert rebuilt["sizes"]["test"] == 32 and rebuilt["content_hash"] != data.read_splits(data_dir)[1]


KILLED_RUN = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from workloads.wmt import data
from wmt_source import prepare_tiny

tokenize_chunk = data.tokenize_chunk
def slow(job, tokenizer):
    count = tokenize_chunk(job, tokenizer)
    time.sleep(0.4)
    return count
data.tokenize_chunk = slow
prepare_tiny({data_dir!r}, {source!r})
"""


def test_a_second_preparation_at_once_is_refused_and_a_killed_one_resumes_from_its_finished_chunks(fixture, tmp_path, monkeypatch):
    source, data_dir, _ = fixture
    script = KILLED_RUN.format(repo=str(REPO), tests=str(REPO / "tests"), data_dir=str(tmp_path), source=str(source))
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    chunks = tmp_path / "wmt" / "work" / "chunks"
    deadline = time.monotonic() + 60
    while len(list(chunks.glob("*.npz"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(UserInputError, match=f"another process is preparing the wmt data in {tmp_path / 'wmt'}; wait"):
        prepare_tiny(tmp_path, source)  # a second copy at once
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(chunks.glob("*.npz"))
    assert 2 <= len(finished) < 10, "the run was not killed between its chunks"
    (chunks / ".train-00001-0000000064.npz.x.tmp").write_bytes(b"half a chunk")  # as a kill mid-write leaves
    (tmp_path / "wmt" / ".prepared.x.building").mkdir()  # as a kill during the assembly leaves
    calls = []
    tokenize_chunk = data.tokenize_chunk
    monkeypatch.setattr(data, "tokenize_chunk", lambda job, tokenizer: calls.append(job[4]) or tokenize_chunk(job, tokenizer))
    prepare_tiny(tmp_path, source)
    assert len(calls) == 10 - len(finished) and not set(calls) & set(finished)
    assert prepared_bytes(tmp_path) == prepared_bytes(data_dir)
    assert sorted(p.name for p in (tmp_path / "wmt").iterdir()) == [".prepare.lock", "prepared"]


# ----- where the sources come from -----
def refuse_downloads(monkeypatch):
    def refuse(**kwargs):
        raise AssertionError(f"downloaded {kwargs}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def test_a_local_copy_is_used_instead_of_the_network(fixture, tmp_path, monkeypatch):
    source, data_dir, _ = fixture
    refuse_downloads(monkeypatch)
    shutil.copytree(source, data.source_root(tmp_path))
    prepare_tiny(tmp_path, None, download=True)  # finds the files in data_dir/wmt/source
    assert prepared_bytes(tmp_path) == prepared_bytes(data_dir)


def test_missing_sources_are_downloaded_into_the_data_dir(fixture, tmp_path, monkeypatch):
    source, data_dir, _ = fixture
    calls = []

    def snapshot_download(repo_id, repo_type, allow_patterns, local_dir):
        calls.append((repo_id, repo_type, sorted(allow_patterns)))
        for pattern in allow_patterns:
            for path in (source / repo_id.split("/")[1]).glob(pattern):
                target = Path(local_dir) / path.relative_to(source / repo_id.split("/")[1])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    prepare_tiny(tmp_path, None, download=True)
    assert sorted(calls) == [("wmt/wmt14", "dataset", ["de-en/test-*.parquet", "de-en/validation-*.parquet"]),
                             ("wmt/wmt17", "dataset", ["de-en/train-*.parquet"])]
    assert (data.source_root(tmp_path) / "wmt17" / "de-en" / "train-00001-of-00002.parquet").is_file()
    assert prepared_bytes(tmp_path) == prepared_bytes(data_dir)
    shutil.rmtree(data.source_root(tmp_path))  # sources deleted to save space: the prepared copy stays usable
    refuse_downloads(monkeypatch)
    prepare_tiny(tmp_path, None, download=True)
    assert prepared_bytes(tmp_path) == prepared_bytes(data_dir)


def test_offline_without_a_local_copy_is_one_line_saying_where_the_files_go(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real client, offline
    with pytest.raises(DataMissingError) as error:
        prepare_tiny(tmp_path, None, download=True)
    message = str(error.value)
    assert "\n" not in message and "LocalEntryNotFoundError" in message and "--source_dir" in message
    assert f"{data.source_root(tmp_path)}/wmt17/de-en" in message and "wmt/wmt14" in message
    with pytest.raises(DataMissingError, match="downloading is off"):
        prepare_tiny(tmp_path, None, download=False)


def test_an_incomplete_source_dir_names_what_is_missing(fixture, tmp_path):
    source, _, _ = fixture
    shutil.copytree(source, tmp_path / "source")
    (tmp_path / "source" / "wmt17" / "de-en" / "train-00001-of-00002.parquet").unlink()
    with pytest.raises(DataMissingError, match=r"lacks [^ ]*/source/wmt17/de-en/train-00001-of-00002\.parquet: put"):
        prepare_tiny(tmp_path / "data", tmp_path / "source")
    for shard in (tmp_path / "source" / "wmt14" / "de-en").glob("test-*"):
        shard.unlink()
    with pytest.raises(DataMissingError, match=r"train-00001-of-00002\.parquet, [^ ]*/wmt14/de-en/test-\*-of-\*\.parquet: put"):
        prepare_tiny(tmp_path / "data", tmp_path / "source")


def test_a_file_that_is_not_parquet_is_one_clear_error(fixture, tmp_path):
    source, _, _ = fixture
    shutil.copytree(source, tmp_path / "source")
    bad = tmp_path / "source" / "wmt17" / "de-en" / "train-00001-of-00002.parquet"
    bad.write_bytes(bad.read_bytes()[:100])  # as a truncated copy
    with pytest.raises(UserInputError, match=rf"{bad} is not a readable parquet file \(.*\): replace it"):
        prepare_tiny(tmp_path / "data", tmp_path / "source")


def test_a_file_without_the_translation_column_is_refused(fixture, tmp_path):
    source, _, _ = fixture
    shutil.copytree(source, tmp_path / "source")
    bad = tmp_path / "source" / "wmt14" / "de-en" / "validation-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["Guten Morgen.", "Good morning."]}), bad)
    with pytest.raises(UserInputError, match=rf"{bad} is not a WMT de-en parquet file: .*'translation'.*found text: string"):
        prepare_tiny(tmp_path / "data", tmp_path / "source")


def test_unexpected_pair_counts_are_refused(fixture, tmp_path):
    source, _, _ = fixture
    with pytest.raises(UserInputError, match="the train files .* hold 420 pairs, not the 5906184 of wmt/wmt17"):
        prepare_tiny(tmp_path, source, expected_pairs=data.EXPECTED_PAIRS)
    with pytest.raises(UserInputError, match="the validation files .* hold 31 pairs, not the 3000 of wmt/wmt14"):
        prepare_tiny(tmp_path, source, expected_pairs={"train": 420, "validation": 3000})
    prepare_tiny(tmp_path, source, expected_pairs={"train": 420, "validation": 31, "test": 33})


def test_too_little_text_for_the_vocabulary_is_one_clear_error(fixture, tmp_path):
    source, _, _ = fixture
    with pytest.raises(UserInputError, match="SentencePiece cannot train a 5000-piece model on this text: .*Vocabulary size too high"):
        prepare_tiny(tmp_path, source, vocabulary_size=5000)


# ----- reading what is not prepared -----
def test_reading_unprepared_data_is_one_line_naming_the_command(fixture, tmp_path):
    source, _, _ = fixture
    expected = (f"wmt data is not prepared in {tmp_path}: run python -m harness.prepare_data --workload wmt "
                f"--data_dir {tmp_path}")
    for read in (data.read_splits, data.load_tokenizer):
        with pytest.raises(DataMissingError) as error:
            read(tmp_path)
        assert str(error.value) == expected
    prepare_tiny(tmp_path, source)
    (data.prepared_dir(tmp_path) / "manifest.json").unlink()  # as an old, incomplete copy
    with pytest.raises(DataMissingError) as error:
        data.read_splits(tmp_path)
    assert str(error.value) == expected


# ----- the command line -----
PREPARED_FROM_SOURCE = '''from toy_workload.torch import Workload as Toy


class Workload(Toy):
    def prepare_dataset(self, source_dir):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "prepared_from.txt").write_text(str(source_dir))
'''


def test_the_command_passes_source_dir_to_workloads_that_prepare_from_sources(tmp_path, capsys):
    folder = tmp_path / "from_source"
    folder.mkdir()
    (folder / "torch.py").write_text(PREPARED_FROM_SOURCE)
    data_dir = tmp_path / "data"
    assert prepare_data.main(["--workload", str(folder), "--data_dir", str(data_dir), "--source_dir", "/copies"]) == 0
    assert (data_dir / "prepared_from.txt").read_text() == "/copies"
    assert prepare_data.main(["--workload", f"{folder},{TOY_WORKLOAD}", "--data_dir", str(data_dir),
                              "--source_dir", "/copies"]) == 2
    assert capsys.readouterr().err == (
        f"error: --source_dir is for workloads prepared from downloaded files; {TOY_WORKLOAD} build their data "
        "from installed packages: drop --source_dir\n")
