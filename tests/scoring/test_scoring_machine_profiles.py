"""Machine profiles in scoring: trials are compared within one budget scaling (profile key), the
report shows the profiles, and records without the fields still score."""

from __future__ import annotations

import pandas as pd
import pytest

from scoring import RunRecordError, load_runs, profile_groups
from scoring.readers import profile_key_of
from support import run_report

P1, P2 = "a1b2c3d4e5f6", "0f0e0d0c0b0a"
CREATED = {P1: "2026-11-02T09:15:00+00:00", P2: "2026-11-20T17:40:00+00:00"}
SPEED = {"w_easy": (0.09, 0.06), "w_hard": (0.2, 0.125)}  # (this machine's, the reference) s/step



def profiled(workload, profile_id=P1, documented_budget=1000.0):
    """meta.json keys of a trial whose budget a machine profile scaled, as the harness writes them."""
    mine, reference = SPEED[workload]
    scale = round(mine / reference, 3)
    return {
        "budget_scale": scale,
        "budget_scale_source": "profile",
        "budget_sec": documented_budget * scale,
        "machine_profile": {
            "id": profile_id,
            "created": CREATED[profile_id],
            "hardware_fingerprint": "hw-a",
            "software": {"torch": "2.5.1", "numpy": "2.1.0"},
            "seconds_per_step": mine,
            "reference_seconds_per_step": reference,
        },
    }


def flagged(scale):
    return {"budget_scale": scale, "budget_scale_source": "flag", "machine_profile": None, "budget_sec": 1000.0 * scale}


def tree(records, scaling):
    """Entries a and b on w_easy and w_hard, 2 studies of 1 trial; `scaling[entry](workload)`
    gives the meta.json keys of its budget scaling (None: an old record without them)."""
    for entry, t in (("a", 10.0), ("b", 15.0)):
        for workload in SPEED:
            extra = scaling[entry](workload)
            for study in range(2):
                records.timetrial(entry, workload, study, 0, records.reaching(t + study), meta_extra=extra)
    return records.root


@pytest.mark.parametrize(
    "meta, key",
    [
        ({}, "none"),  # an old record: not scaled
        ({"budget_scale": 1.0, "budget_scale_source": "none", "machine_profile": None}, "none"),
        (flagged(1.6), "budget_scale=1.6"),
        (profiled("w_easy"), P1),
    ],
)
def test_profile_key_of_a_record(records, tmp_path, meta, key):
    records.timetrial("a", "w_easy", 0, 0, records.reaching(10.0), meta_extra=meta)
    trial = load_runs([tmp_path]).trials.iloc[0]
    assert trial["profile_key"] == key
    assert trial["budget_scale"] == meta.get("budget_scale", 1.0)
    assert trial["budget_scale_source"] == meta.get("budget_scale_source", "none")
    assert profile_key_of(trial["budget_scale_source"], trial["budget_scale"], meta.get("machine_profile")) == key


@pytest.mark.parametrize(
    "meta, problem",
    [
        ({"budget_scale": -1.0}, "budget_scale must be a positive number, got -1.0"),
        ({"budget_scale": "fast"}, "budget_scale must be a number, got 'fast'"),
        ({"budget_scale_source": "guess"}, "budget_scale_source must be one of profile, flag, none, got 'guess'"),
        (
            {"budget_scale": 1.5, "budget_scale_source": "profile"},
            "budget_scale_source is 'profile' but machine_profile is null",
        ),
        ({"budget_scale": 1.5}, "budget_scale is 1.5 but budget_scale_source is 'none' (not scaled)"),
        ({"machine_profile": {"created": "x"}}, "machine_profile must be null or an object with an 'id'"),
    ],
)
def test_inconsistent_scaling_fields_name_the_file(records, tmp_path, meta, problem):
    d = records.timetrial("a", "w_easy", 0, 0, records.reaching(10.0), meta_extra=meta)
    with pytest.raises(RunRecordError) as caught:
        load_runs([tmp_path])
    assert caught.value.path == str(d / "meta.json") and problem in caught.value.problem


@pytest.mark.parametrize(
    "b_scaling, shown",
    [
        (lambda w: profiled(w, P2), f"machine profile {P2} (created {CREATED[P2]})"),
        (lambda w: {}, "no machine profile (budgets as documented, not scaled)"),  # an old record
        (lambda w: flagged(1.5), "no machine profile, budgets scaled by --budget_scale 1.5"),
    ],
    ids=["other profile", "no profile", "budget_scale flag"],
)
def test_different_profiles_on_a_workload_are_refused_unless_allowed(records, tmp_path, capsys, b_scaling, shown):
    root = tree(records, {"a": profiled, "b": b_scaling})
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(
        "python -m scoring.report: error: run records of 2 workloads come from different machine profiles "
        "(budgets scaled for different machines, or scaled and not), so their times are not comparable: w_easy: "
    )
    for workload in ("w_easy", "w_hard"):
        a = root / "exp" / f"{workload}_pytorch" / "a" / "study_0" / "trial_0"
        b = root / "exp" / f"{workload}_pytorch" / "b" / "study_0" / "trial_0"
        assert f"machine profile {P1} (created {CREATED[P1]}): 2 trials of a under {root}, e.g. {a}" in err
        assert f"{shown}: 2 trials of b under {root}, e.g. {b}" in err
    assert err.rstrip().endswith("(pass --allow_mixed_profiles to score them together)")
    assert not (tmp_path / "r").exists()

    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10", "--allow_mixed_profiles"], capsys)
    assert code == 0, err
    assert "warning: run records of 2 workloads come from different machine profiles" in err
    md = (tmp_path / "r" / "leaderboard.md").read_text()
    assert "come from different machine profiles" in md
    line = next(line for line in md.splitlines() if line.startswith("- **Machine profile:**"))
    assert f"machine profile {P1} (created {CREATED[P1]}): 4 trials" in line and f"{shown}: 4 trials" in line
    scores = pd.read_csv(tmp_path / "r" / "scores.csv").set_index("entry")["score"]
    assert scores["a"] == pytest.approx(1.0) and scores["b"] == pytest.approx((4 - 15.5 / 10.5) / 3)


def test_a_workload_without_calibration_beside_profiled_ones_is_not_mixing(records, tmp_path, capsys):
    """One machine's sweep: its profile scaled w_easy's budget, w_hard has no calibration (not
    scaled). Each workload's trials share a key, so the times compare like with like: no refusal,
    and the report shows both."""
    root = tree(records, {"a": lambda w: profiled(w) if w == "w_easy" else {},
                          "b": lambda w: profiled(w) if w == "w_easy" else {}})
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert "machine profiles" not in err
    md = (out / "leaderboard.md").read_text()
    assert (
        f"- **Machine profile:** machine profile {P1} (created {CREATED[P1]}): 4 trials; "
        "no machine profile (budgets as documented, not scaled): 4 trials"
    ) in md
    profiles = md.split("## Machine profiles and budgets")[1].split("##")[0]
    assert f"| {P1} | {CREATED[P1]} | w_easy | 0.09 | 0.06 | 1.5 | 1500 s | 4 |" in profiles
    assert "w_hard" not in profiles


def test_one_profile_scores_and_the_report_shows_it(records, tmp_path, capsys):
    root = tree(records, {"a": profiled, "b": profiled})
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert "machine profile" not in err
    md = (out / "leaderboard.md").read_text()
    assert f"- **Machine profile:** machine profile {P1} (created {CREATED[P1]}): 8 trials" in md
    assert "## Machine profiles and budgets" in md
    # per workload: this machine's and the reference seconds per step, the scale, the scaled budget
    assert f"| {P1} | {CREATED[P1]} | w_easy | 0.09 | 0.06 | 1.5 | 1500 s | 4 |" in md
    assert f"| {P1} | {CREATED[P1]} | w_hard | 0.2 | 0.125 | 1.6 | 1600 s | 4 |" in md
    html = (out / "leaderboard.html").read_text()
    assert f"<dt>Machine profile</dt><dd>machine profile {P1} (created {CREATED[P1]}): 8 trials</dd>" in html
    assert 'id="machine_profiles"' in html
    assert (
        f"<td>{P1}</td><td>{CREATED[P1]}</td><td>w_hard</td><td data-value=\"0.2\">0.2</td>"
        f"<td data-value=\"0.125\">0.125</td><td data-value=\"1.6\">1.6</td>"
    ) in html
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["profile_key"]) == {P1} and set(trials["budget_scale"]) == {1.5, 1.6}


def test_old_records_without_the_fields_still_score(records, tmp_path, capsys):
    """Records from before budget scaling (no budget_scale, no machine_profile, no contended)
    score together with records that say 'not scaled', as one profile, with no table of profiles."""
    root = tree(records, {"a": lambda w: {}, "b": lambda w: {"budget_scale": 1.0, "budget_scale_source": "none",
                                                              "machine_profile": None}})
    for d in root.rglob("summary.json"):
        d.unlink()
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert len(profile_groups(load_runs([root]))) == 1
    scores = pd.read_csv(out / "scores.csv").set_index("entry")["score"]
    assert scores["a"] == pytest.approx(1.0) and scores["b"] == pytest.approx((4 - 15.5 / 10.5) / 3)
    md = (out / "leaderboard.md").read_text()
    assert "- **Machine profile:** no machine profile (budgets as documented, not scaled): 8 trials" in md
    assert "Machine profiles and budgets" not in md
    assert "- **Contention:** no trial flagged contended" in md
