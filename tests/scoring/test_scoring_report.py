"""`python -m scoring.report` end to end: the files it writes and the inputs it refuses."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from scoring.report import file_stems
from support import run_report

REPO = Path(__file__).resolve().parents[2]



def test_writes_markdown_html_csvs_and_plots(standard_report):
    _, out = standard_report
    names = {p.name for p in out.iterdir()}
    for stem in ("profile_time", "profile_steps", "time_to_target", "curves_w_easy", "curves_w_hard"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    csvs = {"scores.csv", "times.csv", "studies.csv", "trials.csv", "profiles.csv", "comparisons.csv"}
    assert {"leaderboard.md", "leaderboard.html"} | csvs <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]

    scores = pd.read_csv(out / "scores.csv")
    assert list(scores["entry"]) == ["fast", "baseline", "slow"]
    # w_hard is unsolved but counts: the fastest on w_easy scores 1/2
    assert scores.loc[0, "score"] == pytest.approx(0.5)
    assert scores.loc[2, "score"] == 0.0  # 90 s is more than 4x the fastest
    assert (pd.read_csv(out / "profiles.csv").columns[1:].astype(float).max()) == 4.0

    md = (out / "leaderboard.md").read_text()
    assert re.search(r"^\| 1 \| fast \| 0\.5000 \|", md, re.M)
    assert "![Performance profiles by time to target" in md and "(profile_time.png)" in md

    html = (out / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)=["']?(https?:|//|[^"'#d])""", html)  # nothing outside the page
    assert 'class="sortable" id="leaderboard"' in html and "<script>" in html


def test_refuses_to_overwrite_unless_asked_and_leaves_other_files(standard_report, tmp_path, capsys):
    root, rendered = standard_report
    out = tmp_path / "report"
    shutil.copytree(rendered, out)
    (out / "notes.txt").write_text("mine")
    before = (out / "scores.csv").read_bytes()
    code, _, err = run_report([root, "--out", out, "--bootstrap", "50"], capsys)
    assert code == 1 and "already has" in err and "--overwrite" in err and err.count("\n") == 1
    code, _, err = run_report([root, "--out", out, "--bootstrap", "50", "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "scores.csv").read_bytes() == before  # same inputs, same seed: same numbers


def test_refuses_mixed_hardware_and_says_which_runs(records, tmp_path, capsys):
    root = records.standard_tree(hardware=("hw-a", "hw-a", "hw-b"))
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "2 different hardware classes" in err
    assert f"cpu-hw-a / no GPU x1 (fingerprint hw-a): 24 trials of baseline, fast under {root}" in err
    assert f"cpu-hw-b / no GPU x1 (fingerprint hw-b): 12 trials of slow under {root}" in err
    assert "--allow_mixed_hardware" in err
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10", "--allow_mixed_hardware"], capsys)
    assert code == 0
    assert "2 different hardware classes" in (tmp_path / "r" / "leaderboard.md").read_text()


def test_no_records_and_bad_records(records, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_report([tmp_path / "empty", "--out", tmp_path / "r"], capsys)
    assert code == 1 and "no run records found" in err and err.count("\n") == 1
    for study in range(2):
        records.timetrial("slow", "w_easy", study, 0, records.reaching(30.0))
    root = records.root
    bad = root / "exp" / "w_easy_pytorch" / "slow" / "study_0" / "trial_0" / "eval.jsonl"
    bad.write_text(bad.read_text()[:-20])
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10"], capsys)
    assert code == 1 and f"{bad}: truncated last line" in err and err.count("\n") == 1
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10", "--skip_bad_records"], capsys)
    assert code == 0 and "truncated last line" in err


def test_algoperf_mode_with_held_out_variant(records, tmp_path, capsys):
    for study in range(2):
        for name, t in (("a", 10.0), ("b", 15.0)):
            records.timetrial(name, "w", study, 0, records.reaching(t))
            records.timetrial(name, "w_var", study, 0, records.reaching(t if name == "b" else math.inf))
    out = tmp_path / "r"
    code, _, err = run_report(
        [records.root, "--out", out, "--mode", "algoperf", "--suite", "w", "--held_out", "w_var", "--bootstrap", "10"],
        capsys,
    )
    assert code == 0, err
    scores = pd.read_csv(out / "scores.csv").set_index("entry")["score"]
    assert scores["a"] == 0.0 and scores["b"] == pytest.approx(1.0)
    md = (out / "leaderboard.md").read_text()
    assert "AlgoPerf-compatible" in md and "w_var (for w)" in md


def test_command_line_errors_are_one_line_with_nonzero_exit(tmp_path):
    cmd = [sys.executable, "-m", "scoring.report", str(tmp_path), "--out", str(tmp_path / "r"), "--no_such_option"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "python -m scoring.report: error: unrecognized arguments: --no_such_option\n"


def test_workload_names_alike_once_made_safe_get_distinct_files(records, tmp_path, capsys):
    """'w+1' and 'w 1' both become 'w_1' when made safe: each gets its own figure files."""
    for workload in ("w+1", "w 1", "w_1"):
        records.timetrial("a", workload, 0, 0, records.reaching(30.0))
    out = tmp_path / "r"
    code, _, err = run_report([records.root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    curves = sorted(p.name for p in out.glob("curves_*.png"))
    assert len(curves) == 3 and "curves_w_1.png" in curves  # a safe name stays as it is
    assert all(re.fullmatch(r"curves_[A-Za-z0-9_.-]+\.png", name) for name in curves)
    md = (out / "leaderboard.md").read_text()
    assert all(f"({name})" in md for name in curves)


def test_file_stems_are_distinct_safe_and_case_insensitively_unique():
    names = ["w", "W", "a/b", "a\\b", "a b", "x" * 300, "../up", "w-" + "0" * 8]
    stems = file_stems(names)
    assert stems["w-00000000"] == "w-00000000" and stems["a/b"].startswith("a_b-")
    assert len({s.casefold() for s in stems.values()}) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", s) for s in stems.values())
    assert file_stems(["a b"]) == {"a b": stems["a b"]}  # a name's file does not depend on the others


def test_dollar_signs_in_names_are_drawn_as_plain_text(records, tmp_path, capsys, monkeypatch):
    """A name that is broken math text ('$\\frac{1}{$') is drawn as it is, whatever matplotlibrc
    says about TeX."""
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)
    for study in range(2):
        records.timetrial("cost$\\frac{1}{$x", "$w$", study, 0, records.reaching(30.0))
        records.timetrial("b", "$w$", study, 0, records.reaching(40.0))
    out = tmp_path / "r"
    code, _, err = run_report([records.root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert list(pd.read_csv(out / "scores.csv")["entry"]) == ["cost$\\frac{1}{$x", "b"]


def test_markdown_shows_names_as_text_not_markup(records, tmp_path, capsys):
    """HTML, emphasis, table pipes and math in names are escaped in leaderboard.md (and in
    leaderboard.html, as before)."""
    names = ["<script>alert(1)</script>", "*bold* a|b $x$"]
    for name in names:
        records.timetrial(name, "w<i>", 0, 0, records.reaching(30.0))
    out = tmp_path / "r"
    code, _, err = run_report([records.root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    md = (out / "leaderboard.md").read_text()
    assert "<script" not in md and "<i>" not in md
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; |" in md
    assert "| \\*bold\\* a\\|b \\$x\\$ |" in md
    assert "## Time to target" in md and "| Submission | w&lt;i&gt; |" in md
    html = (out / "leaderboard.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
