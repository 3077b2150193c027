"""`python submit.py --workload wmt --submission sophia`, as a user runs it, on a tiny preparation of real-format
source files (tests/wmt_source.py) with the documented test-only model (TIMETRIAL_WMT_TEST_MODEL=1)."""

from __future__ import annotations

import json
import os

import pytest

from support import run_submit
from wmt_source import prepare_tiny, write_source
from workloads.wmt.workload import TEST_CONFIG, TEST_MODEL_VARIABLE


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("wmt")
    write_source(root / "source")
    prepare_tiny(root / "data", root / "source")
    return root / "data"


def model_env(value: str = "1") -> dict:
    return {**os.environ, TEST_MODEL_VARIABLE: value}


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_sophia_on_wmt_leaves_a_complete_record_with_bleu_rows(prepared, tmp_path, framework):
    if framework == "jax":
        pytest.importorskip("flax")
    result = run_submit("--workload", "wmt", "--submission", "sophia", "--framework", framework,
                        "--data_dir", str(prepared), "--max_global_steps", "3", "--experiment_dir", str(tmp_path),
                        "--experiment_name", "e", env=model_env())
    assert result.returncode == 0, result.stderr
    trial = tmp_path / "e" / f"wmt_{framework}" / "sophia_g" / "study_0" / "trial_1"  # sophia is sophia_g
    rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [1, 3]
    for split in ("train", "validation", "test"):
        assert {f"{split}/bleu", f"{split}/loss", f"{split}/accuracy"} <= set(rows[-1])
        assert 0.0 <= rows[-1][f"{split}/bleu"] <= 100.0 and rows[-1][f"{split}/loss"] > 0
    assert rows[1]["train/loss"] != rows[0]["train/loss"]  # the steps trained the model
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["global_step"] == 3
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["test_model"] is True and meta["model_config"]["width"] == TEST_CONFIG.width
    assert meta["validation_target_value"] == 30.8491 and meta["max_allowed_runtime_sec"] == 43_336


def test_a_test_vocabulary_without_the_test_model_is_refused(prepared, tmp_path):
    result = run_submit("--workload", "wmt", "--data_dir", str(prepared), "--experiment_dir", str(tmp_path),
                        env=model_env("0"))
    assert result.returncode == 2 and not (tmp_path / "default").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "300-piece vocabulary, not AlgoPerf's 32000" in result.stderr and TEST_MODEL_VARIABLE in result.stderr


def test_missing_data_is_one_line_naming_the_prepare_command(tmp_path):
    result = run_submit("--workload", "wmt", "--submission", "sophia", "--data_dir", str(tmp_path / "none"),
                        "--experiment_dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    assert result.stderr.strip() == (f"error: wmt data is not prepared in {tmp_path / 'none'}: run python -m "
                                     f"harness.prepare_data --workload wmt --data_dir {tmp_path / 'none'}")


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_sophia_on_wmt_runs_on_two_devices(prepared, tmp_path, framework):
    """Two torchrun processes (gloo), or a mesh of two host devices: evaluation batches are split between
    the devices, so one device's part of the last batch may hold no pair (its BLEU statistics count nothing)."""
    if framework == "jax":
        pytest.importorskip("flax")
    env = {**model_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = run_submit("--workload", "wmt", "--submission", "sophia", "--framework", framework, "--num_devices", "2",
                        "--data_dir", str(prepared), "--max_global_steps", "4", "--experiment_dir", str(tmp_path),
                        "--experiment_name", "e", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "e" / f"wmt_{framework}" / "sophia_g" / "study_0" / "trial_1"
    rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [1, 4] and "validation/bleu" in rows[-1]
    assert json.loads((trial / "meta.json").read_text())["num_devices"] == 2
