"""`benchmarks/gpu_step_time.py` on a CPU with the test model: every part runs and prints its figures (the GPU
figures themselves come from a lent GPU, never from a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wmt_source import prepare_tiny, write_source

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_step_time.py"
# A stand-in for a checkout of AlgoPerf: its wmt model files at AlgoPerf's paths, here our own model under
# AlgoPerf's constructor names, so that loading by path and the side-by-side timing run without AlgoPerf's code.
FAKE_TORCH_MODELS = '''
from workloads.wmt.torch import Transformer as _Ours
from workloads.wmt.workload import TransformerConfig


class Transformer(_Ours):
    def __init__(self, ntoken, d_model, nhead, d_hid, nlayers, layer_norm_eps):
        super().__init__(TransformerConfig(vocab_size=ntoken, width=d_model, heads=nhead, mlp_width=d_hid,
                                           encoder_layers=nlayers, decoder_layers=nlayers, layer_norm_eps=layer_norm_eps))

    def forward(self, src, tgt, dropout_rate):
        return super().forward({"inputs": src, "targets": tgt})
'''


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--test_model", "--batch_size", "4", "--steps", "5", *args],
                          capture_output=True, text=True, timeout=600)


def test_torch_parts_run_side_by_side_and_measure_the_harness(tmp_path):
    write_source(tmp_path / "source")
    prepare_tiny(tmp_path / "data", tmp_path / "source")
    models = tmp_path / "algoperf" / "algoperf" / "workloads" / "wmt" / "wmt_pytorch" / "models.py"
    models.parent.mkdir(parents=True)
    models.write_text(FAKE_TORCH_MODELS)
    result = run("--framework", "pytorch", "--algoperf_repo", str(tmp_path / "algoperf"),
                 "--data_dir", str(tmp_path / "data"), "--blocks", "2", "--block_steps", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("wmt (pytorch) on cpu: batch 4 x 256 tokens, TEST model")
    assert any(line.startswith("  ours: ") and "ms per step" in line for line in lines)
    assert any(line.startswith("  algoperf: ") for line in lines)
    assert any(line.startswith("  ours/AlgoPerf's step time: ") for line in lines)
    assert any(line.startswith("harness overhead: harness ") and "harness/bare median" in line for line in lines)


def test_jax_model_step_and_memory_analysis():
    pytest.importorskip("flax")
    result = run("--framework", "jax")
    assert result.returncode == 0, result.stderr
    ours = next(line for line in result.stdout.splitlines() if line.startswith("  ours: "))
    assert "ms per step, peak memory" in ours and "GiB" in ours  # XLA's memory analysis of the step
    assert "harness overhead: not measured (no --data_dir" in result.stdout


def test_a_folder_that_is_no_algoperf_checkout_is_refused(tmp_path):
    result = run("--algoperf_repo", str(tmp_path))
    assert result.returncode == 2 and "has no algoperf/workloads/wmt" in result.stderr
