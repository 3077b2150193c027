"""Score run records and write the leaderboard.

    python -m scoring.report experiments/sweep_a experiments/sweep_b --out reports/today
    python -m scoring.report logs/external_tuning --mode algoperf --algoperf_version 0.5 --out r

Writes into --out: leaderboard.md, leaderboard.html (self-contained: sortable tables, figures
inlined), CSVs (scores, times, studies, trials, profiles, comparisons) and PNG + SVG figures
(performance profiles, time-to-target per workload, validation curves per workload).

Refuses, with one error line and a nonzero exit: paths without run records, bad records (an
unreadable file, or an impossible row, see scoring/ingest.py; the line names the file and row;
--skip_bad_records skips them with a warning), runs from different hardware classes (unless
--allow_mixed_hardware), runs of one workload from different machine profiles (budgets scaled
for different machines, or scaled and not; unless --allow_mixed_profiles; see
scoring/machine_profiles.py), runs from different Docker images, or from an image and without a
container (unless --allow_mixed_images; see scoring/images.py), a
--suite or --held_out workload that no entry ran (a default suite, such as AlgoPerf v0.6's,
leaves such a workload out with a warning instead), and existing output files (unless
--overwrite; other files in --out are never touched). Every file is written atomically. Figure
files are named after their workload, with a hash of the name when it has characters other than
letters, digits and `_.-`.
A hardware class is the accelerator model and count for accelerator runs (runs that differ only
in host CPU are scored together, and the report names the host CPUs) and the full fingerprint
for CPU-only runs. Empty trial directories and eval_measurements.csv files outside AlgoPerf's
layout are skipped with one warning line each. Trials flagged contended (other processes used
the CPUs during their timed steps) are scored and marked, with a warning, or dropped before
scoring with --exclude_contended (scoring/contention.py).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from harness.records import atomic_write_bytes
from scoring import plots
from scoring.html import render_page
from scoring.contention import describe_contention, drop_contended
from scoring.hardware import describe_hardware, hardware_groups, mixed_hardware_message
from scoring.images import describe_images, image_groups, mixed_images_message
from scoring.ingest import RunRecordError, Runs, load_runs
from scoring.leaderboard import Leaderboard, ScoringConfig, UnrunWorkloads, score_runs
from scoring.machine_profiles import (
    describe_profiles,
    mixed_profiles,
    mixed_profiles_message,
    profile_groups,
    profile_workloads,
)
from scoring.markdown import render_markdown
from scoring.tables import (
    comparisons_table,
    describe_mode,
    leaderboard_table,
    profiles_table,
    tidy_times,
    times_table,
)
from scoring.targets import ALGOPERF_VERSIONS

TITLE = "TimeTrial leaderboard"


class ReportError(Exception):
    """A problem with the inputs, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m scoring.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (TimeTrial or AlgoPerf layout), searched recursively")
    p.add_argument("--out", required=True, help="directory for the report (created if missing)")
    p.add_argument("--mode", choices=("exact", "algoperf"), default="exact", help="scoring mode (default: exact)")
    p.add_argument(
        "--algoperf_version",
        choices=ALGOPERF_VERSIONS,
        default="0.6",
        help="AlgoPerf version whose targets score AlgoPerf-layout runs (and, with --mode algoperf, "
        "whose suite and held-out workloads are used)",
    )
    p.add_argument(
        "--suite", help="comma-separated base workloads to score (default: every workload seen, or AlgoPerf's)"
    )
    p.add_argument("--held_out", help="comma-separated held-out variants, each 'variant' or 'variant=base'")
    p.add_argument("--r_max", type=float, default=4.0, help="largest performance ratio that earns credit (default: 4)")
    p.add_argument("--expected_studies", type=int, help="count missing studies as not reached, up to this number")
    p.add_argument("--reference", help="entry for speedups and significance tests (default: 'baseline' or the leader)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval confidence (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument(
        "--allow_mixed_hardware",
        action="store_true",
        help="score runs from different hardware classes together (accelerator model and count; "
        "the full fingerprint for CPU-only runs)",
    )
    p.add_argument(
        "--allow_mixed_profiles",
        action="store_true",
        help="score a workload's runs from different machine profiles together (mini-suite budgets scaled "
        "for different machines, by --budget_scale, or not at all)",
    )
    p.add_argument(
        "--allow_mixed_images",
        action="store_true",
        help="score runs from different Docker images together (the image each trial's worker ran in; "
        "a run without a container counts as one)",
    )
    p.add_argument(
        "--exclude_contended",
        action="store_true",
        help="drop trials flagged contended (other processes used the CPUs during their timed steps) before "
        "scoring; by default they are scored and marked",
    )
    p.add_argument(
        "--skip_bad_records",
        action="store_true",
        help="warn about and skip unreadable trials and trials with impossible rows instead of failing",
    )
    p.add_argument("--overwrite", action="store_true", help="replace report files already in --out")
    return p


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _held_out(spec: str | None, suite: Sequence[str] | None) -> dict[str, str]:
    """{variant: base} from 'v=b,v2'; a bare variant's base is the longest suite workload whose
    name starts it."""
    out = {}
    for item in _split(spec):
        variant, _, base = item.partition("=")
        if not base:
            candidates = [w for w in (suite or []) if variant.startswith(w + "_")]
            if not candidates:
                raise ReportError(f"--held_out {variant!r}: name its base workload as {variant}=<base>")
            base = max(candidates, key=len)
        out[variant.strip()] = base.strip()
    return out


def make_config(args: argparse.Namespace, runs: Runs) -> ScoringConfig:
    suite = tuple(_split(args.suite)) or None
    overrides: dict = {"r_max": args.r_max, "expected_studies": args.expected_studies}
    if args.mode == "algoperf":
        config = ScoringConfig.algoperf(args.algoperf_version, **overrides, **({"suite": suite} if suite else {}))
    else:
        config = ScoringConfig(mode="exact", suite=suite, **overrides)
    if args.held_out:
        known = config.suite or sorted(set(runs.trials["workload"].astype(str)))
        held_out = _held_out(args.held_out, known)
        config = ScoringConfig(**{**config.__dict__, "held_out": held_out, "explicit": config.explicit | {"held_out"}})
    return config


def _unrun_message(e: UnrunWorkloads, config: ScoringConfig) -> str:
    """The command-line form of `e`: which flag names the workloads nobody ran, and the flag
    value without them."""
    names = ", ".join(e.workloads)
    them = "it" if len(e.workloads) == 1 else "them"
    if e.kind == "suite":
        rest = ",".join(w for w in config.suite or () if w not in e.workloads)
        fix = f"drop {them} (--suite {rest})" if rest else f"drop {them} from --suite"
        return (
            f"--suite names {names}, which no entry ran (every entry would count as not reaching {them}); "
            f"{fix}, or omit --suite for the default suite, which leaves out workloads nobody ran"
        )
    rest = ",".join(f"{v}={b}" for v, b in config.held_out.items() if v not in e.workloads)
    fix = f"drop {them} (--held_out {rest})" if rest else "drop --held_out"
    return f"--held_out names {names}, which no entry ran (every entry's base workload time would be void); {fix}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_STEM = 64  # characters of a name kept in its file name


def _hashed(name: str, digits: int) -> str:
    """`name` made safe (other characters as '_', cut to MAX_STEM) plus `digits` hex of its SHA-1."""
    return f"{_UNSAFE.sub('_', name)[:MAX_STEM]}-{hashlib.sha1(name.encode()).hexdigest()[:digits]}"


def file_stems(names: Sequence[str]) -> dict[str, str]:
    """{name: file name part}, distinct even on case-insensitive file systems: a name of letters,
    digits and `_.-` (at most MAX_STEM long) as it is, any other with a hash of the name appended."""
    stems = {n: n if _UNSAFE.search(n) is None and len(n) <= MAX_STEM else _hashed(n, 8) for n in names}
    for digits in (8, 16, 40):
        seen: dict[str, list[str]] = {}
        for name, stem in stems.items():
            seen.setdefault(stem.casefold(), []).append(name)
        clashing = [name for group in seen.values() if len(group) > 1 for name in group]
        if not clashing:
            return stems
        stems.update({name: _hashed(name, digits) for name in clashing})
    raise RuntimeError(f"no distinct file names for {clashing}")


def _meta(board: Leaderboard, runs: Runs, args: argparse.Namespace, mixed: str | None, dropped: int) -> dict[str, str]:
    suite = ", ".join(board.suite)
    if board.unrun:
        suite += f"; left out, as no entry ran them: {', '.join(board.unrun)}"
    held = ", ".join(f"{v} (for {b})" for v, b in board.held_out.items())
    layouts = ", ".join(sorted(runs.trials["layout"].astype(str).unique()))
    roots = ", ".join(str(Path(r).resolve()) for r in args.runs)
    groups = hardware_groups(runs)
    hardware = mixed or "; ".join(describe_hardware(g) for g in groups.itertuples())
    meta = {
        "Scoring": describe_mode(board),
        "Suite": f"{len(board.suite)} workloads: {suite}",
        "Held-out variants": held or "none",
        "r_max": f"{board.config.r_max:g} (ratios above it earn no credit)",
        "Intervals": f"{board.confidence:.0%} bootstrap over studies, {board.n_bootstrap} resamples, seed {board.seed}",
        "Reference": str(board.reference),
        "Hardware": hardware,
        "Machine profile": describe_profiles(profile_groups(runs)),
        "Docker image": describe_images(image_groups(runs)),
        "Contention": describe_contention(runs.trials, dropped),
        "Run records": f"{len(runs.trials)} trials, {len(runs.evals)} evaluations ({layouts} layout) under {roots}",
        "Targets": (
            f"meta.json for TimeTrial runs; AlgoPerf v{args.algoperf_version} targets "
            "(scoring/data/algoperf_targets.json) for AlgoPerf runs, and for workloads those lack the "
            "timetrial_target.json beside the run's eval_measurements.csv"
        ),
    }
    return meta


CSV_FILES = ("scores.csv", "times.csv", "studies.csv", "trials.csv", "profiles.csv", "comparisons.csv")


def _curve_workloads(board: Leaderboard) -> list[str]:
    return board.suite + [v for v in board.held_out if v in board.times.columns and v not in board.suite]


def _curve_stems(board: Leaderboard) -> dict[str, str]:
    """{workload: the stem of its validation-curve figure files}."""
    return {w: f"curves_{stem}" for w, stem in file_stems(_curve_workloads(board)).items()}


def planned_files(board: Leaderboard) -> list[str]:
    """Names of every file `report_files` writes, known before anything is rendered."""
    stems = ["profile_time", "profile_steps", "time_to_target", *_curve_stems(board).values()]
    figures = [f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")]
    return sorted([*CSV_FILES, *figures]) + ["leaderboard.md", "leaderboard.html"]


def report_files(
    board: Leaderboard, runs: Runs, args: argparse.Namespace, mixed: str | None, dropped: int = 0
) -> dict[str, bytes]:
    """{file name: contents} of the whole report."""
    files: dict[str, bytes] = {}
    csvs = {
        "scores.csv": board.table,
        "times.csv": tidy_times(board),
        "studies.csv": board.studies,
        "trials.csv": board.trials,
        "profiles.csv": board.profiles.rename_axis("entry").rename(columns=lambda tau: f"{tau:.6g}").reset_index(),
        "comparisons.csv": board.comparisons,
    }
    for name, frame in csvs.items():
        files[name] = frame.to_csv(index=False).encode()

    figures: list[tuple[str, str, str]] = []  # (stem, caption, alt)
    rendered = {}
    rendered["profile_time"] = plots.plot_profiles(board)
    figures.append(
        (
            "profile_time",
            "Performance profiles by time to target (legend: benchmark score).",
            "performance profiles by time",
        )
    )
    rendered["profile_steps"] = plots.plot_profiles(board, steps=True)
    figures.append(("profile_steps", "Performance profiles by steps to target.", "performance profiles by steps"))
    rendered["time_to_target"] = plots.plot_time_to_target(board)
    figures.append(
        (
            "time_to_target",
            f"Median time to target per workload with {board.confidence:.0%} bootstrap intervals.",
            "time to target per workload",
        )
    )
    for workload, stem in _curve_stems(board).items():
        rendered[stem] = plots.plot_curves(runs.evals, board, workload)
        figures.append(
            (
                stem,
                f"{workload}: validation metric against timed seconds, target dashed.",
                f"validation curves for {workload}",
            )
        )
    pngs = {}
    for stem, fig in rendered.items():
        for path, data in plots.figure_files(fig, Path(stem)).items():
            files[str(path)] = data
        pngs[stem] = files[f"{stem}.png"]

    tables = [
        leaderboard_table(board),
        times_table(board),
        times_table(board, steps=True),
        comparisons_table(board),
        profiles_table(profile_workloads(runs)),
    ]
    meta = _meta(board, runs, args, mixed, dropped)
    names = planned_files(board)
    files["leaderboard.md"] = render_markdown(
        TITLE, meta, tables, [(caption, f"{stem}.png") for stem, caption, _ in figures], board.warnings, names
    ).encode()
    files["leaderboard.html"] = render_page(
        TITLE,
        meta,
        [(t, i) for t, i in zip(tables, ("leaderboard", "times", "steps", "comparisons", "machine_profiles"))],
        [(alt, pngs[stem], caption) for stem, caption, alt in figures],
        board.warnings,
        names,
    ).encode()
    return files


def run(args: argparse.Namespace) -> Leaderboard:
    """Everything `main` does, raising on bad inputs."""
    if args.bootstrap < 1:
        raise ReportError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    if not 0 < args.confidence < 1:
        raise ReportError(f"--confidence must be between 0 and 1, got {args.confidence}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(
            args.runs, algoperf_version=args.algoperf_version, on_error="warn" if args.skip_bad_records else "raise"
        )
    if runs.trials.empty:
        skipped = f" ({'; '.join(runs.warnings)})" if runs.warnings else ""
        raise ReportError(f"no run records found under {', '.join(args.runs)}{skipped}")
    dropped = 0
    if args.exclude_contended:
        runs, dropped = drop_contended(runs)
        if runs.trials.empty:
            raise ReportError(
                f"every trial ({dropped}) is contended, so --exclude_contended leaves nothing to score; "
                "leave it out to score them (marked as contended)"
            )
    groups, profiles = hardware_groups(runs), mixed_profiles(runs)
    mixed = mixed_hardware_message(groups) if len(groups) > 1 else None
    if mixed and not args.allow_mixed_hardware:
        raise ReportError(mixed + " (pass --allow_mixed_hardware to score them together)")
    images = image_groups(runs)
    mixed_images = mixed_images_message(images) if len(images) > 1 else None
    if mixed_images and not args.allow_mixed_images:
        raise ReportError(mixed_images + " (pass --allow_mixed_images to score them together)")
    mixed_scaling = mixed_profiles_message(profiles) if len(profiles) else None
    if mixed_scaling and not args.allow_mixed_profiles:
        raise ReportError(mixed_scaling + " (pass --allow_mixed_profiles to score them together)")
    config = make_config(args, runs)
    try:
        board = score_runs(
            runs,
            config,
            reference=args.reference,
            n_bootstrap=args.bootstrap,
            confidence=args.confidence,
            seed=args.seed,
        )
    except UnrunWorkloads as e:
        raise ReportError(_unrun_message(e, config)) from None
    board.warnings[:0] = [m for m in (mixed, mixed_images, mixed_scaling) if m]
    existing = [name for name in planned_files(board) if (out / name).exists()]
    if existing and not args.overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ReportError(f"{out} already has {shown}; pass --overwrite to replace them")
    files = report_files(board, runs, args, mixed, dropped)
    if sorted(files) != sorted(planned_files(board)):
        raise RuntimeError("report files differ from the planned list")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    return board


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        board = run(args)
    except (ReportError, RunRecordError, FileNotFoundError, NotADirectoryError, ValueError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    top = board.table.iloc[0]
    print(
        f"{len(board.table)} entries on {len(board.suite)} workloads; leader: {top['entry']} "
        f"(score {top['score']:.4f} [{top['score_low']:.4f}, {top['score_high']:.4f}])"
    )
    for note in board.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(f"report written to {Path(args.out).resolve()}/leaderboard.html and leaderboard.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
