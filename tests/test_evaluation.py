"""Cheaper evaluation: batches assembled once, inference mode, length-sorted sequence workloads,
BLEU references prepared once; the metrics stay what they were."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness import spec
from harness.discovery import load_workload
from support import nadamw_on_one_batch
from harness.bleu import bleu_references, bleu_statistics

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"


def test_evaluation_assembles_its_batches_once_and_training_continues_after_it(toy_workload):
    model, state = toy_workload.init_model_fn(0)
    calls = []
    assemble = toy_workload.host_eval_batch
    toy_workload.host_eval_batch = lambda split, index: calls.append(len(index)) or assemble(split, index)
    first = toy_workload.eval_model(32, model, state, 0, "", None, 1)
    assembled = len(calls)
    assert toy_workload.eval_model(32, model, state, 0, "", None, 2) == first
    assert len(calls) == assembled == 6  # 3 splits x 64 examples / 32; none at the second evaluation
    # Inference mode leaves the model trainable (no inference tensor is kept in it).
    batch = next(toy_workload._build_input_queue(0, "train", "", 16))
    logits, _ = toy_workload.model_fn(model, batch, state, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
    toy_workload.loss_fn(batch["targets"], logits)["summed"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bleu_statistics_of_prepared_references_equal_those_of_the_texts():
    references = ["y dijo Dios : Sea la luz", "a b c d e f", "En el principio"]
    hypotheses = ["y dijo Dios : Sea luz", "a b c d e", "Al principio"]
    assert bleu_statistics(hypotheses, bleu_references(references)) == bleu_statistics(hypotheses, references)
    with pytest.raises(ValueError, match="2 translations for 3 references"):
        bleu_statistics(hypotheses[:2], bleu_references(references))


@pytest.mark.parametrize("name, data_dir, metric", [("bible_translation", DATA_DIR, "bleu"),
                                                     ("espeak_speech", DATA_DIR, "wer")])
def test_length_sorted_evaluation_does_not_depend_on_the_batch_size(name, data_dir, metric):
    workload = load_workload(name, "pytorch", data_dir)
    batch = next(workload._build_input_queue(0, "train", str(data_dir), 8))
    model, state, _, _ = nadamw_on_one_batch(workload, batch, 5)
    small = workload._eval_model_on_split("validation", 12, 5, model, state, 0, str(data_dir))
    large = workload._eval_model_on_split("validation", 12, 12, model, state, 0, str(data_dir))
    assert small[metric] == large[metric] and math.isfinite(small[metric])
    assert small == pytest.approx(large, rel=1e-6)


def test_a_batch_without_translations_counts_nothing():
    empty = bleu_statistics([], bleu_references([]))
    assert empty == bleu_statistics([], []) and set(empty.values()) == {0.0}
    hypotheses, references = ["the cat sat on the mat"], ["the cat sat on a mat"]
    with_empty = {k: v + empty[k] for k, v in bleu_statistics(hypotheses, references).items()}
    assert with_empty == bleu_statistics(hypotheses, references)
