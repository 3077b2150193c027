"""Builders for small run-record trees, in TimeTrial's layout and in AlgoPerf's."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from harness.records import ALGOPERF_FIXED_COLUMNS


def curve(times, values, metric="validation/error_rate", steps=None, extra=None):
    """Evaluation rows: accumulated_submission_time = times[i], `metric` = values[i]."""
    rows = []
    for i, (t, v) in enumerate(zip(times, values)):
        row = {
            "global_step": (steps[i] if steps is not None else 100 * (i + 1)),
            "accumulated_submission_time": float(t),
            "accumulated_eval_time": 1.0 * (i + 1),
            "accumulated_logging_time": 0.01 * (i + 1),
            "total_duration": float(t) + 1.0 * (i + 1),
            "preemption_count": 0,
            "train/loss": 1.0 / (i + 1),
            metric: v,
        }
        row.update(extra or {})
        rows.append(row)
    return rows


def reaching(time, target=0.1, direction="min", metric="validation/error_rate", n=6, hit_index=3, steps_per_sec=10):
    """A curve whose first evaluation meeting `target` is evaluation `hit_index`, at `time`
    (time = ∞: the target is never met)."""
    hit = target - 0.01 if direction == "min" else target + 0.01
    miss = target + 0.2 if direction == "min" else target - 0.2
    if math.isinf(time):
        times = [10.0 * (i + 1) for i in range(n)]
        values = [miss] * n
    else:
        times = [time * (i + 1) / (hit_index + 1) for i in range(n)]
        times[hit_index] = time
        values = [miss] * hit_index + [hit] * (n - hit_index)
    return curve(times, values, metric, steps=[int(t * steps_per_sec) + 1 for t in times])


class Records:
    """Writes trials under `root` (`timetrial`, `algoperf` return the trial directory);
    `curve` and `reaching` build evaluation rows. `timetrial(hardware=...)` is the fingerprint
    (with `cpu`, `accelerator`, `num_devices` as harness/environment.py records them), and
    `meta_extra` adds or replaces meta.json keys;
    `algoperf(hardware=(cpu, gpu, count))` writes AlgoPerf's meta_data_0.json."""

    curve = staticmethod(curve)
    reaching = staticmethod(reaching)

    def __init__(self, root: Path):
        self.root = root

    def timetrial(
        self,
        submission,
        workload,
        study,
        trial,
        rows,
        *,
        framework="pytorch",
        metric="error_rate",
        direction="min",
        target=0.1,
        hardware="hw-a",
        hparams=None,
        summary=None,
        experiment="exp",
        max_runtime=1000.0,
        eval_text=None,
        cpu=None,
        accelerator=None,
        num_devices=1,
        meta_extra=None,
    ):
        d = self.root / experiment / f"{workload}_{framework}" / submission / f"study_{study}" / f"trial_{trial}"
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "workload": workload,
            "framework": framework,
            "submission": submission,
            "study": study,
            "trial": trial,
            "ruleset": "external",
            "rng_seed": 1000 * study + trial,
            "hardware": {  # as harness/environment.py writes it
                "cpu": cpu or f"cpu-{hardware}",
                "cpu_count": 2,
                "memory_gib": 8,
                "machine": "x86_64",
                "accelerator": accelerator,
                "num_devices": num_devices,
                "fingerprint": hardware,
            },
            "software": {"python": "3.11"},
            "git_commit": None,
            "flags": {},
            "target_metric_name": metric,
            "metric_direction": direction,
            "validation_target_value": target,
            "test_target_value": target,
            "max_allowed_runtime_sec": max_runtime,
            "step_hint": 1000,
            "data_hash": None,
            **(meta_extra or {}),  # e.g. budget_scale, budget_scale_source, machine_profile, budget_sec
        }
        (d / "meta.json").write_text(json.dumps(meta))
        if hparams is not None:
            (d / "hparams.json").write_text(json.dumps(hparams))
        if eval_text is None:
            eval_text = "".join(json.dumps(r) + "\n" for r in rows)
        (d / "eval.jsonl").write_text(eval_text)
        if summary is not None:
            (d / "summary.json").write_text(json.dumps(summary))
        return d

    def algoperf(
        self,
        submission,
        workload,
        study,
        trial,
        rows,
        *,
        framework="jax",
        hparams=None,
        hardware=None,
        text=None,
        logs="logs",
    ):
        d = self.root / logs / submission / f"study_{study}" / f"{workload}_{framework}" / f"trial_{trial}"
        d.mkdir(parents=True, exist_ok=True)
        if text is None:
            metrics = sorted({k for r in rows for k in r if "/" in k})
            columns = sorted({*ALGOPERF_FIXED_COLUMNS, *metrics})  # AlgoPerf's logger sorts the header
            with open(d / "eval_measurements.csv", "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(columns)
                for r in rows:
                    values = {**r, "score": r["accumulated_submission_time"]}
                    writer.writerow(["" if values.get(c) is None else values.get(c, "") for c in columns])
        else:
            (d / "eval_measurements.csv").write_text(text)
        if hparams is not None:
            (d / "hparams.json").write_text(json.dumps(hparams))
        if hardware is not None:
            meta = {"rng_seed": 7, "cpu_model_name": hardware[0], "cpu_count": 8}
            if hardware[1] is not None:  # AlgoPerf's logger writes the GPU keys only when it sees a GPU
                meta.update(gpu_model_name=hardware[1], gpu_count=hardware[2], gpu_driver="535.104.05")
            (d / "meta_data_0.json").write_text(json.dumps(meta))
        return d

    def standard_tree(self, hardware=("hw-a", "hw-a", "hw-a")):
        """Submissions fast, baseline, slow on two workloads (nobody reaches w_hard), three
        studies of two trials each; `hardware` gives each submission's fingerprint."""
        speed = {"fast": 10.0, "baseline": 20.0, "slow": 90.0}
        for (name, t), hw in zip(speed.items(), hardware):
            for study in range(3):
                for trial in range(2):
                    time = t * (1 + 0.1 * study + 0.5 * trial)
                    self.timetrial(name, "w_easy", study, trial, reaching(time), hardware=hw, hparams={"lr": trial})
                    self.timetrial(name, "w_hard", study, trial, reaching(math.inf), hardware=hw, hparams={"lr": trial})
        return self.root


@pytest.fixture
def records(tmp_path):
    return Records(tmp_path)


@pytest.fixture(scope="session")
def standard_report(tmp_path_factory):
    """(run records, report directory) of `Records.standard_tree`, rendered once per session."""
    from scoring.report import main

    root = Records(tmp_path_factory.mktemp("standard_runs")).standard_tree()
    out = tmp_path_factory.mktemp("standard_report") / "report"
    assert main([str(root), "--out", str(out), "--bootstrap", "50"]) == 0
    return root, out
