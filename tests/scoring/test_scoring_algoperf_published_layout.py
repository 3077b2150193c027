"""AlgoPerf's published logs score with no flags: the quirks of those trees, rebuilt small.

AlgoPerf's v0.5 external-tuning logs (mlcommons/submissions_algorithms,
previous_leaderboards/algoperf_v05/logs/external_tuning) have 18 stray copies of
eval_measurements.csv at `<submission>/study_<k>/trial_<i>/` (outside the layout), empty
`trial_<i>` directories, and two host CPUs ("Intel(R) Xeon(R) CPU @ 2.00GHz" and "@ 2.30GHz")
in front of the same 8 x Tesla V100-SXM2-16GB. None of that may stop the report or need a flag.

`test_published_v05_scores_from_the_real_logs` checks the published numbers themselves on the
real logs (917 MB, not in the repo) when TIMETRIAL_ALGOPERF_V05_LOGS names their `logs` folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring import algoperf_targets, hardware_groups, load_runs
from support import run_report

V100 = "Tesla V100-SXM2-16GB"
CPU_A = "Intel(R) Xeon(R) CPU @ 2.00GHz"
CPU_B = "Intel(R) Xeon(R) CPU @ 2.30GHz"
LAYOUT = "<submission>/study_<k>/<workload>_<jax|pytorch>/trial_<i>/"



def reach(records, workload, time, hit_index=3):
    """Rows that first meet `workload`'s AlgoPerf v0.5 target at evaluation `hit_index`, at `time`."""
    target = algoperf_targets("0.5").get(workload)
    return records.reaching(
        time,
        target=target.validation_target,
        direction=target.direction,
        metric=target.validation_metric,
        hit_index=hit_index,
    )


def stray_copy(trial_dir: Path) -> Path:
    """Copy a trial's CSV to `<submission>/study_<k>/trial_<i>/`, as AlgoPerf's published logs do."""
    stray = trial_dir.parent.parent / trial_dir.name / "eval_measurements.csv"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text((trial_dir / "eval_measurements.csv").read_text())
    return stray


def test_stray_csvs_outside_the_layout_are_one_warning_not_an_error(records, tmp_path):
    """Three stray CSVs and two empty trial directories: the real trial is read, and each kind
    of skipped thing is one warning line with its count and an example path (no flag needed)."""
    strays = [stray_copy(records.algoperf("sub", "ogbg", k, 1, reach(records, "ogbg", 100.0 + k))) for k in range(3)]
    for k in (0, 1):
        (tmp_path / "logs" / "sub" / f"study_{k}" / "criteo1tb_jax" / "trial_1").mkdir(parents=True)
    with pytest.warns(UserWarning) as caught:
        runs = load_runs([tmp_path / "logs"], algoperf_version="0.5")  # on_error="raise", the default
    assert len(runs.trials) == 3 and set(runs.trials["study"]) == {0, 1, 2}
    assert runs.warnings == [
        f"2 trial_<i> directories without meta.json or eval_measurements.csv (not a trial, skipped), "
        f"e.g. {tmp_path / 'logs' / 'sub' / 'study_0' / 'criteo1tb_jax' / 'trial_1'}",
        f"skipped 3 eval_measurements.csv files outside AlgoPerf's layout {LAYOUT}, e.g. {min(map(str, strays))}",
    ]
    assert [str(w.message) for w in caught] == runs.warnings


def test_only_stray_csvs_is_no_records_and_says_why(tmp_path, capsys):
    d = tmp_path / "sub" / "study_0" / "trial_1"
    d.mkdir(parents=True)
    (d / "eval_measurements.csv").write_text("global_step,accumulated_submission_time\n1,2\n")
    code, _, err = run_report([tmp_path, "--out", tmp_path / "r", "--mode", "algoperf"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "no run records found" in err and "skipped 1 eval_measurements.csv file outside AlgoPerf's layout" in err


def test_gpu_runs_are_one_class_across_host_cpus_and_layouts(records, tmp_path):
    """The class of a GPU run is the GPU model and count, read from AlgoPerf's meta_data_0.json
    (gpu_model_name, gpu_count) and from TimeTrial's meta.json (hardware.accelerator,
    num_devices) alike; the fingerprints and host CPUs stay visible."""
    rows = reach(records, "ogbg", 100.0)
    records.algoperf("a", "ogbg", 0, 1, rows, hardware=(CPU_A, V100, 8))
    records.algoperf("a", "ogbg", 1, 1, rows, hardware=(CPU_B, V100, 8))
    records.timetrial(
        "t", "ogbg", 0, 0, records.reaching(5.0), hardware="fp-t", cpu=CPU_B, accelerator=V100, num_devices=8
    )
    runs = load_runs([tmp_path], algoperf_version="0.5")
    assert set(runs.trials["hardware_class"].astype(str)) == {f"8 x {V100}"}
    assert runs.trials["hardware"].nunique() == 3  # the recorded fingerprints are kept
    groups = hardware_groups(runs)
    assert len(groups) == 1
    g = groups.iloc[0]
    assert g["trials"] == 3 and g["host_cpus"] == [(CPU_B, 2), (CPU_A, 1)] and g["entries"] == ["a", "t"]


@pytest.mark.parametrize(
    "other, shown",
    [((CPU_A, V100, 4), f"4 x {V100}"), ((CPU_A, "NVIDIA A100-SXM4-40GB", 8), "8 x NVIDIA A100-SXM4-40GB")],
)
def test_different_gpu_model_or_count_is_refused(records, tmp_path, capsys, other, shown):
    rows = reach(records, "ogbg", 100.0)
    records.algoperf("a", "ogbg", 0, 1, rows, hardware=(CPU_A, V100, 8))
    records.algoperf("b", "ogbg", 0, 1, rows, hardware=other)
    code, _, err = run_report([tmp_path, "--out", tmp_path / "r", "--mode", "algoperf"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "2 different hardware classes" in err and f"8 x {V100}" in err and shown in err


def test_cpu_only_runs_keep_the_full_fingerprint(records, tmp_path, capsys):
    """No GPU in meta_data_0.json (AlgoPerf then writes no gpu_* keys): the host CPU is the
    hardware, so a different CPU is a different class, as before."""
    rows = reach(records, "ogbg", 100.0)
    records.algoperf("a", "ogbg", 0, 1, rows, hardware=(CPU_A, None, None))
    records.algoperf("b", "ogbg", 0, 1, rows, hardware=(CPU_B, None, None))
    runs = load_runs([tmp_path])
    assert (runs.trials["hardware_class"] == runs.trials["hardware"]).all()
    assert runs.trials["hardware"].nunique() == 2
    code, _, err = run_report([tmp_path, "--out", tmp_path / "r", "--mode", "algoperf"], capsys)
    assert code == 1 and "2 different hardware classes" in err and f"{CPU_A} / no GPU" in err


def _v05_tree(records):
    """Two submissions in AlgoPerf's v0.5 layout with the published logs' quirks. Times are the
    first target-reaching evaluations of trial 1 (trial 2 gets there faster but one evaluation
    later, so AlgoPerf's earliest-evaluation rule picks trial 1); studies at 0.9x, 1x, 1.2x."""
    times = {
        "first": {"ogbg": 1000.0, "ogbg_model_size": 1000.0, "wmt": 10000.0, "wmt_glu_tanh": 8000.0},
        # ogbg: ratio 2.5; wmt: ratio 1.2, but its held-out variant is 5x the best: v0.5 voids wmt
        "second": {"ogbg": 2500.0, "ogbg_model_size": 1500.0, "wmt": 12000.0, "wmt_glu_tanh": 40000.0},
    }
    hosts = {"first": (CPU_A, "pytorch"), "second": (CPU_B, "jax")}
    strays = []
    for submission, by_workload in times.items():
        cpu, framework = hosts[submission]
        for workload, time in by_workload.items():
            for study, factor in enumerate((0.9, 1.0, 1.2)):
                t = time * factor
                records.algoperf(submission, workload, study, 1, reach(records, workload, t),
                                 framework=framework, hardware=(cpu, V100, 8))
                d = records.algoperf(submission, workload, study, 2, reach(records, workload, t / 2, hit_index=4),
                                     framework=framework, hardware=(cpu, V100, 8))
                if workload == "ogbg" and submission == "first":
                    strays.append(stray_copy(d))
        (records.root / "logs" / submission / "study_2" / f"criteo1tb_{framework}" / "trial_1").mkdir(parents=True)
    return records.root / "logs", strays


def _grid_score(ratios, suite_size=8, r_max=4.0):
    """AlgoPerf's score, written out: the profile on linspace(1, r_max, 100), trapezoid rule."""
    taus = np.linspace(1.0, r_max, 100)
    rho = np.array([sum(r <= tau for r in ratios) / suite_size for tau in taus])
    return float(((rho[1:] + rho[:-1]) / 2 * np.diff(taus)).sum() / (r_max - 1))


def test_v05_report_needs_no_flags(records, tmp_path, capsys):
    """`--mode algoperf --algoperf_version 0.5` and nothing else: the strays are one warning
    line, the host CPUs are named in both reports, and the scores follow AlgoPerf's v0.5 rules."""
    logs, strays = _v05_tree(records)
    out = tmp_path / "report"
    code, _, err = run_report([logs, "--mode", "algoperf", "--algoperf_version", "0.5", "--out", out,
                             "--bootstrap", "20"], capsys)
    assert code == 0, err
    stray_lines = [line for line in err.splitlines() if "outside AlgoPerf's layout" in line]
    assert stray_lines == [
        f"warning: skipped 3 eval_measurements.csv files outside AlgoPerf's layout {LAYOUT}, "
        f"e.g. {min(map(str, strays))}"
    ]
    assert "different hardware" not in err

    # nobody ran v0.5's six other base workloads: left out, one line each, so the suite is ogbg, wmt
    unrun = sorted(set(algoperf_targets("0.5").base_workloads) - {"ogbg", "wmt"})
    assert [line for line in err.splitlines() if "has no runs from any entry" in line] == [
        f"warning: suite workload {w} has no runs from any entry: left out, so the suite has 2 workloads "
        "(counting it would only score every entry as not reaching it)"
        for w in unrun
    ]
    scores = pd.read_csv(out / "scores.csv").set_index("entry")["score"]
    assert scores["first"] == pytest.approx(_grid_score([1.0, 1.0], suite_size=2), abs=1e-12) == pytest.approx(1.0)
    assert scores["second"] == pytest.approx(_grid_score([2.5, math.inf], suite_size=2), abs=1e-12)
    times = pd.read_csv(out / "times.csv")
    first_ogbg = times[(times["entry"] == "first") & (times["workload"] == "ogbg")]
    assert first_ogbg["time_to_target"].tolist() == [1000.0]  # trial 1: the earliest evaluation

    for name in ("leaderboard.md", "leaderboard.html"):
        text = (out / name).read_text()
        assert f"8 x {V100}" in text and "host CPUs differ, not compared" in text, name
        assert f"{CPU_A} (24 trials)" in text and f"{CPU_B} (24 trials)" in text, name


# --- The published numbers, on the real logs (optional: 917 MB) -------------------------------

# previous_leaderboards/algoperf_v05/README.md of mlcommons/submissions_algorithms (commit 12c8e4ea)
PUBLISHED_V05 = {
    "external_tuning": {
        "shampoo_submission": 0.7784, "schedule_free_adamw": 0.7077, "generalized_adam": 0.6383,
        "cyclic_lr": 0.6301, "nadamp": 0.5909, "baseline": 0.5707, "amos": 0.4918,
        "caspr_adaptive": 0.4722, "lawa_queue": 0.3699, "lawa_ema": 0.3384, "schedule_free_prodigy": 0.0,
    },
    "self_tuning": {
        "schedule_free_adamw": 0.8542, "baseline": 0.8194, "nadamw_sequential": 0.3308,
        "sinv6_75": 0.1420, "sinv6": 0.0903, "adamg": 0.0,
    },
}
REAL_LOGS = os.environ.get("TIMETRIAL_ALGOPERF_V05_LOGS")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_LOGS, reason="set TIMETRIAL_ALGOPERF_V05_LOGS to .../algoperf_v05/logs")
@pytest.mark.parametrize("ruleset", sorted(PUBLISHED_V05))
def test_published_v05_scores_from_the_real_logs(ruleset, tmp_path, capsys):
    code, _, err = run_report([Path(REAL_LOGS) / ruleset, "--mode", "algoperf", "--algoperf_version", "0.5",
                             "--out", tmp_path / "r", "--bootstrap", "10"], capsys)
    assert code == 0, err
    scores = pd.read_csv(tmp_path / "r" / "scores.csv").set_index("entry")["score"]
    assert {entry: round(score, 4) for entry, score in scores.items()} == PUBLISHED_V05[ruleset]
