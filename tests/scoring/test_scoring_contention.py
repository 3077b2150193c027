"""Contended trials in scoring: scored and marked by default, dropped with --exclude_contended."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scoring import RunRecordError, drop_contended, load_runs
from support import run_report

FIGURES = {
    "other_cpu_seconds": 41.0,
    "observed_seconds": 60.0,
    "other_cores_mean": 0.68,
    "busy_step_share": 0.55,
    "busy_cores_threshold": 0.5,
    "contended_step_share": 0.1,
}



def summary(time, contended):
    return {"status": "reached", "time_to_target": time, "contended": contended,
            "contention": FIGURES if contended else None}


def contended_tree(records):
    """One workload w, three studies of two trials (exact mode takes each study's fastest).
    a: trial 0 takes 20 s; trial 1 takes 10 s in studies 0 and 1, both contended, and 30 s in
    study 2. b: 16 s everywhere. Scored with the contended trials a's median is 10 s (a leads);
    without them 20 s (b leads)."""
    for study in range(3):
        records.timetrial("a", "w", study, 0, records.reaching(20.0), summary=summary(20.0, False))
        fast = study < 2
        records.timetrial("a", "w", study, 1, records.reaching(10.0 if fast else 30.0),
                          summary=summary(10.0 if fast else 30.0, fast))
        for trial in range(2):
            records.timetrial("b", "w", study, trial, records.reaching(16.0), summary=summary(16.0, False))
    return records.root


def test_contended_trials_are_scored_marked_and_warned_about(records, tmp_path, capsys):
    root = contended_tree(records)
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "contended" in line]
    assert warning == [
        "warning: 2 of 12 trials ran on a contended machine (other processes used its CPUs during their timed "
        "steps; see their summary.json): a on w (2 of 6); they are scored, and a study time from one is marked † "
        "(python -m scoring.report --exclude_contended drops them)"
    ]
    scores = pd.read_csv(out / "scores.csv").set_index("entry")
    assert scores.loc["a", "score"] == pytest.approx(1.0)
    assert scores.loc["b", "score"] == pytest.approx((4 - 1.6) / 3)
    assert scores["contended_trials"].to_dict() == {"a": 2, "b": 0}

    md = (out / "leaderboard.md").read_text()
    assert "| 1 | a | 1.0000 |" in md and "| 6 (2 contended) |" in md
    times_section = md.split("## Time to target")[1].split("##")[0]
    a_row = next(line for line in times_section.splitlines() if line.startswith("| a |"))
    b_row = next(line for line in times_section.splitlines() if line.startswith("| b |"))
    assert a_row.endswith("† |") and "†" not in b_row
    assert "† = at least one study's seconds come from a trial run on a contended machine." in times_section
    assert "- **Contention:** 2 of 12 trials contended: scored, their study times marked †" in md
    html = (out / "leaderboard.html").read_text()
    assert "6 (2 contended)" in html and "2 of 12 trials ran on a contended machine" in html

    studies = pd.read_csv(out / "studies.csv").query("entry == 'a'").set_index("study")
    assert studies["time_contended"].tolist() == [True, True, False]
    assert studies["contended_trials"].tolist() == [1, 1, 0]
    trials = pd.read_csv(out / "trials.csv")
    assert trials["contended"].sum() == 2
    assert json.loads(trials.loc[trials["contended"], "contention"].iloc[0]) == FIGURES
    assert pd.read_csv(out / "times.csv").set_index("entry").loc["a", "contended_trials"] == 2


def test_exclude_contended_drops_them_before_scoring(records, tmp_path, capsys):
    root = contended_tree(records)
    out = tmp_path / "r"
    code, stdout, err = run_report([root, "--out", out, "--bootstrap", "10", "--exclude_contended"], capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "contended" in line] == [
        "warning: dropped 2 contended trials of 12 before scoring (--exclude_contended): a on w (2 of 6)"
    ]
    assert "leader: b" in stdout
    scores = pd.read_csv(out / "scores.csv").set_index("entry")
    # a's studies now take trial 0 (20 s) each: ratio 20/16 = 1.25; b leads
    assert scores.loc["b", "score"] == pytest.approx(1.0)
    assert scores.loc["a", "score"] == pytest.approx((4 - 1.25) / 3)
    assert scores.loc["a", "trials"] == 4 and scores["contended_trials"].sum() == 0
    md = (out / "leaderboard.md").read_text()
    assert "- **Contention:** 2 contended trials dropped before scoring (--exclude_contended)" in md
    assert "dropped 2 contended trials of 12 before scoring" in md and "†" not in md
    assert "2 contended trials dropped before scoring" in (out / "leaderboard.html").read_text()
    assert len(pd.read_csv(out / "trials.csv")) == 10


def test_drop_contended_keeps_the_other_trials_and_their_evaluations(records, tmp_path):
    runs = load_runs([contended_tree(records)])
    kept, dropped = drop_contended(runs)
    assert dropped == 2 and len(kept.trials) == 10 and not kept.trials["contended"].any()
    assert kept.trials["trial_id"].tolist() == list(range(10))
    before = runs.evals.groupby("trial_dir", observed=True)["accumulated_submission_time"].apply(list)
    after = kept.evals.groupby("trial_dir", observed=True)["accumulated_submission_time"].apply(list)
    assert after.to_dict() == {d: v for d, v in before.items() if d in set(kept.trials["trial_dir"].astype(str))}
    assert (kept.evals["trial_id"].map(kept.trials.set_index("trial_id")["trial_dir"]) == kept.evals["trial_dir"]).all()
    assert drop_contended(kept) == (kept, 0)


def test_all_trials_contended_and_excluded_is_one_error(records, tmp_path, capsys):
    records.timetrial("a", "w", 0, 0, records.reaching(10.0), summary=summary(10.0, True))
    code, _, err = run_report([records.root, "--out", tmp_path / "r", "--exclude_contended"], capsys)
    assert code == 1 and err.count("\n") == 1 and "every trial (1) is contended" in err


def test_a_bad_contended_value_names_the_file(records, tmp_path):
    bad = {"status": "reached", "time_to_target": 10.0, "contended": "yes"}
    d = records.timetrial("a", "w", 0, 0, records.reaching(10.0), summary=bad)
    with pytest.raises(RunRecordError, match="contended must be true or false, got 'yes'") as caught:
        load_runs([tmp_path])
    assert caught.value.path == str(d / "summary.json")
    with pytest.warns(UserWarning, match="summary ignored"):
        runs = load_runs([tmp_path], on_error="warn")
    assert not runs.trials["contended"].any() and runs.trials["status"].isna().all()
