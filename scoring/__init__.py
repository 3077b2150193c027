"""TimeTrial scoring: from run records to a leaderboard you can trust.

    from scoring import load_runs, score_runs, ScoringConfig
    runs = load_runs(["experiments/sweep"])                 # TimeTrial or AlgoPerf layout
    board = score_runs(runs, ScoringConfig(mode="exact"))   # or ScoringConfig.algoperf("0.5")
    print(board.table)

Command line: `python -m scoring.report <run dirs...> --out <dir>` (see scoring/report.py).

Modules, one job each: `readers` (read one trial directory, either layout), `ingest` (find
trials and build the tables), `eval_rows` (impossible rows), `hardware`, `machine_profiles` and
`images` (what runs are compared by), `contention` (contended trials), `targets` (AlgoPerf's
targets data file), `time_to_target` (per trial / study / median), `profiles` (ratios,
performance profiles, scores), `stats` (bootstrap, speedups, significance), `leaderboard` (puts
them together), `tables`, `plots`, `markdown`, `html`, `report` (the CLI and its files).
"""

from scoring.contention import drop_contended
from scoring.hardware import hardware_groups, mixed_hardware_message
from scoring.images import image_groups, mixed_images_message
from scoring.ingest import RunRecordError, Runs, find_trials, hyperparameters, load_runs, select_trials
from scoring.leaderboard import Leaderboard, ScoringConfig, UnrunWorkloads, score_runs
from scoring.machine_profiles import mixed_profiles, mixed_profiles_message, profile_groups
from scoring.profiles import (
    algoperf_taus,
    benchmark_scores,
    held_out_rule,
    performance_profile,
    performance_ratios,
    score_exact,
    score_grid,
)
from scoring.stats import Comparison, bootstrap, compare, comparisons_table, geometric_mean_speedup, holm
from scoring.targets import ALGOPERF_VERSIONS, TargetSet, WorkloadTarget, algoperf_targets
from scoring.time_to_target import median_over_studies, study_results, study_values, trial_results

__all__ = [
    "ALGOPERF_VERSIONS",
    "Comparison",
    "Leaderboard",
    "RunRecordError",
    "Runs",
    "ScoringConfig",
    "TargetSet",
    "UnrunWorkloads",
    "WorkloadTarget",
    "algoperf_taus",
    "algoperf_targets",
    "benchmark_scores",
    "bootstrap",
    "compare",
    "comparisons_table",
    "drop_contended",
    "find_trials",
    "geometric_mean_speedup",
    "hardware_groups",
    "held_out_rule",
    "holm",
    "hyperparameters",
    "image_groups",
    "load_runs",
    "median_over_studies",
    "mixed_hardware_message",
    "mixed_images_message",
    "mixed_profiles",
    "mixed_profiles_message",
    "performance_profile",
    "performance_ratios",
    "profile_groups",
    "score_exact",
    "score_grid",
    "score_runs",
    "select_trials",
    "study_results",
    "study_values",
    "trial_results",
]
