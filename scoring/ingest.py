"""Read run records, in TimeTrial's layout and in AlgoPerf's, into one long table.

TimeTrial (one directory per trial, written by `harness/records.py`)::

    <experiment_dir>/<experiment_name>/<workload>_<framework>/<submission>/study_<k>/trial_<i>/
        meta.json  hparams.json  eval.jsonl  summary.json

AlgoPerf::

    <submission>/study_<k>/<workload>_<jax|pytorch>/trial_<i>/eval_measurements.csv
        (+ hparams.json, meta_data_0.json and flags_0.json when present: seed, hardware, ruleset)

`load_runs` finds every trial under the given paths and returns `Runs`:

* `Runs.evals` — one row per evaluation: `trial_id`, `eval_index` (row of the trial's file,
  counting from 0), the trial's identity and metadata (`entry`, `submission`, `workload`,
  `framework`, `study`, `trial`, `hparams` as canonical JSON, `seed`, `hardware` fingerprint,
  `hardware_class` (what runs are compared by), `host_cpu`, `target_metric`, `direction`,
  `validation_target`, ...) and every logged number (`global_step`,
  `accumulated_submission_time`, `train/*`, `validation/*`, `test/*`, ...).
  Rows are ordered by (`trial_id`, `eval_index`).
* `Runs.trials` — one row per trial, including trials that have not evaluated yet.

`entry` is the leaderboard name: the submission, or `submission[framework]` for a submission
recorded in more than one framework. Targets come from `meta.json` for TimeTrial runs and from
`scoring/data/algoperf_targets.json` for AlgoPerf runs (for a workload it lacks, from the
`timetrial_target.json` that `harness.export_algoperf` writes beside the CSV; see `readers`).

Bad records raise `RunRecordError` naming the file (and the row); with `on_error="warn"` the
trial is skipped with a warning instead (a truncated last line, which a killed process can
leave, only loses that line). Besides unreadable files, a record is bad when one of its rows is
impossible (`scoring/eval_rows.py`: missing, negative or decreasing times; a target metric that
would meet any target).

Empty `trial_<i>` directories and eval_measurements.csv files outside AlgoPerf's layout
(AlgoPerf's published v0.5 logs have 18, copies under `<submission>/study_<k>/trial_<i>/`)
are not errors: each kind is skipped with one warning giving the count and an example path.

Hardware classes (what runs are compared by) are grouped in `scoring/hardware.py`, machine
profiles (`profile_key`, also compared) in `scoring/machine_profiles.py`, Docker images
(`docker_image`: the image's ID, or "none" for a trial run without a container; also compared,
with `docker_image_name`, the name it was run by) in `scoring/images.py`, and contended trials
(`contended`) are counted and dropped in `scoring/contention.py`; the fields are read in `readers`.
`select_trials` keeps a subset of the trials (with their evaluations).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoring.readers import (
    ALGOPERF_EVALS,
    ALGOPERF_LAYOUT,
    REQUIRED_COLUMNS,
    TIMETRIAL_META,
    TRIAL_DIR,
    OutsideLayout,
    RunRecordError,
    TrialRecord,
    read_trial,
)
from scoring.eval_rows import evals_path, impossible_rows
from scoring.targets import algoperf_targets

__all__ = [
    "RunRecordError",
    "Runs",
    "find_trials",
    "hyperparameters",
    "load_runs",
    "select_trials",
]

_SKIP_DIRS = {"checkpoint", "checkpoints", "__pycache__"}

TRIAL_COLUMNS = (
    "trial_id",
    "entry",
    "submission",
    "workload",
    "framework",
    "study",
    "trial",
    "layout",
    "ruleset",
    "seed",
    "hardware",
    "hardware_desc",
    "hardware_class",
    "host_cpu",
    "hparams",
    "target_metric",
    "direction",
    "validation_target",
    "test_target",
    "max_runtime_sec",
    "status",
    "summary_time_to_target",
    "budget_scale",
    "budget_scale_source",
    "profile_key",
    "machine_profile",
    "contended",
    "contention",
    "docker_image",
    "docker_image_name",
    "n_evals",
    "trial_dir",
    "root",
)
# not copied onto evaluation rows
_TRIAL_ONLY = ("trial_id", "n_evals", "machine_profile", "contention", "docker_image_name")
_CATEGORICAL = (
    "entry",
    "submission",
    "workload",
    "framework",
    "layout",
    "ruleset",
    "hardware",
    "hardware_desc",
    "hardware_class",
    "host_cpu",
    "hparams",
    "target_metric",
    "direction",
    "status",
    "budget_scale_source",
    "profile_key",
    "machine_profile",
    "docker_image",
    "docker_image_name",
    "trial_dir",
    "root",
)


@dataclass
class Runs:
    """Everything read from run records: `evals` (one row per evaluation) and `trials`."""

    evals: pd.DataFrame
    trials: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Discovery


def find_trials(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """(trial directory, the path it was found under) for every `trial_<i>` directory under
    `paths`, sorted; a path may itself be a trial directory. Trial directories are not listed
    here (they are leaves): the parser opens the files it expects, which is much faster."""
    found: list[tuple[str, str]] = []
    for root in paths:
        root = os.path.abspath(os.fspath(root))
        if not os.path.exists(root):
            raise FileNotFoundError(f"run directory does not exist: {root}")
        if not os.path.isdir(root):
            raise NotADirectoryError(f"not a directory: {root}")
        if TRIAL_DIR.match(os.path.basename(root)):
            found.append((root, root))
            continue
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError as e:
                raise RunRecordError(d, f"cannot list directory ({e.strerror})") from e
            for e in entries:
                if TRIAL_DIR.match(e.name):
                    if e.is_dir():
                        found.append((e.path, root))
                elif e.name not in _SKIP_DIRS and not e.name.startswith(".") and e.is_dir():
                    stack.append(e.path)
    found.sort()
    return found


# ---------------------------------------------------------------------------------------------
# Assembling the tables


def _timetrial_frames(trials: list[TrialRecord], first_id: int) -> list[pd.DataFrame]:
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(trials):
        if t.n_evals:
            by_keys.setdefault(t.keys, []).append(i)
    frames = []
    for keys, members in by_keys.items():
        counts = np.array([trials[i].n_evals for i in members], dtype=np.int64)
        values = np.concatenate([trials[i].values for i in members])
        frame = pd.DataFrame(values, columns=list(keys))
        frame.insert(0, "trial_id", np.repeat(np.array(members, dtype=np.int64) + first_id, counts))
        frame.insert(1, "eval_index", _ranges(counts))
        frames.append(frame)
    return frames


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] for the given counts."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _algoperf_frames(trials: list[TrialRecord], first_id: int) -> list[pd.DataFrame]:
    by_header: dict[str, list[int]] = {}
    for i, t in enumerate(trials):
        by_header.setdefault(t.csv_header, []).append(i)
    frames = []
    for header, members in by_header.items():
        counts = np.array([trials[i].n_evals for i in members], dtype=np.int64)
        text = header + "\n" + "".join(trials[i].csv_body for i in members)
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=np.float64, engine="c")
        except (ValueError, pd.errors.ParserError):
            for i in members:  # find the file with the bad value
                try:
                    pd.read_csv(io.StringIO(header + "\n" + trials[i].csv_body), dtype=np.float64)
                except (ValueError, pd.errors.ParserError) as e:
                    raise RunRecordError(
                        os.path.join(trials[i].trial_dir, ALGOPERF_EVALS), f"non-numeric value ({e})"
                    ) from None
            raise
        if len(frame) != counts.sum():
            raise RuntimeError("row count mismatch while assembling AlgoPerf CSVs")
        ids = np.array(members, dtype=np.int64)
        frame.insert(0, "trial_id", np.repeat(ids + first_id, counts))
        frame.insert(1, "eval_index", _ranges(counts))
        frames.append(frame)
    return frames


def _entry_names(trials: list[TrialRecord]) -> list[str]:
    frameworks: dict[str, set[str]] = {}
    for t in trials:
        frameworks.setdefault(t.submission, set()).add(t.framework)
    return [f"{t.submission}[{t.framework}]" if len(frameworks[t.submission]) > 1 else t.submission for t in trials]


def _trial_frame(trials: list[TrialRecord]) -> pd.DataFrame:
    entries = _entry_names(trials)
    data = {
        "trial_id": np.arange(len(trials), dtype=np.int64),
        "entry": entries,
        **{name: [getattr(t, name) for t in trials] for name in TRIAL_COLUMNS if name not in ("trial_id", "entry")},
    }
    frame = pd.DataFrame(data)
    for name in ("validation_target", "test_target", "max_runtime_sec", "summary_time_to_target", "budget_scale"):
        frame[name] = frame[name].astype(np.float64)
    frame["contended"] = frame["contended"].astype(bool)
    frame["seed"] = frame["seed"].astype("Int64")
    for name in _CATEGORICAL:
        frame[name] = frame[name].astype("category")
    return frame


def _check_duplicates(trials: list[TrialRecord], entries: list[str], on_error: str, notes: list[str]) -> list[int]:
    seen: dict[tuple, int] = {}
    keep = []
    for i, t in enumerate(trials):
        key = (entries[i], t.workload, t.study, t.trial)
        if key in seen:
            other = trials[seen[key]]
            problem = (
                f"duplicate trial ({entries[i]}, {t.workload}, study {t.study}, trial {t.trial}): "
                f"also recorded in {other.trial_dir}"
            )
            if on_error != "warn":
                raise RunRecordError(t.trial_dir, problem)
            notes.append(f"{t.trial_dir}: {problem}; skipped")
            continue
        seen[key] = i
        keep.append(i)
    return keep


def _skipped_notes(empty: list[str], stray: list[str]) -> list[str]:
    """One line for the trial directories with no record, one for the eval_measurements.csv files
    outside AlgoPerf's layout (AlgoPerf's published logs hold both); each gives a count and an example."""
    notes = []
    if empty:
        notes.append(
            f"{count_phrase(len(empty), 'trial_<i> directory', 'trial_<i> directories')} without {TIMETRIAL_META} "
            f"or {ALGOPERF_EVALS} (not a trial, skipped), e.g. {empty[0]}"
        )
    if stray:
        notes.append(
            f"skipped {count_phrase(len(stray), ALGOPERF_EVALS + ' file')} outside AlgoPerf's layout "
            f"{ALGOPERF_LAYOUT}, e.g. {stray[0]}"
        )
    return notes


def _target_notes(trials: list[TrialRecord], version: str) -> list[str]:
    """One line for the AlgoPerf-layout trials whose timetrial_target.json states another target
    than AlgoPerf's published one (which they are scored against), with a count and an example."""
    notes = [t.target_note for t in trials if t.target_note]
    if not notes:
        return []
    records, are = ("records", "is") if len(notes) == 1 else ("record", "are")
    return [
        f"{count_phrase(len(notes), 'trial')} in AlgoPerf's layout {records} a target other than AlgoPerf "
        f"v{version}'s, and {are} scored against AlgoPerf's, e.g. {notes[0]}"
    ]


def count_phrase(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def load_runs(
    paths: Sequence[str | os.PathLike],
    *,
    algoperf_version: str = "0.6",
    on_error: str = "raise",
    max_workers: int = 1,
) -> Runs:
    """Read every trial under `paths` (either layout) into `Runs` (see the module docstring).

    `algoperf_version` picks the targets used for AlgoPerf-layout runs. `on_error` is "raise"
    (a `RunRecordError` naming the first bad file) or "warn" (skip bad trials, with a warning).
    Either way, empty `trial_<i>` directories and eval_measurements.csv files outside AlgoPerf's
    layout are skipped with one warning each (a count and an example path).
    `max_workers` > 1 reads files in threads: it helps on network filesystems, not on a local
    disk (parsing holds the GIL).
    """
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    found = find_trials(paths)
    targets = algoperf_targets(algoperf_version)

    def parse(item: tuple[str, str]) -> TrialRecord | RunRecordError | None:
        return read_trial(item[0], item[1], on_error, targets)

    if max_workers > 1 and len(found) > 256:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            parsed = list(pool.map(parse, found, chunksize=128))
    else:
        parsed = [parse(item) for item in found]

    notes: list[str] = []
    trials: list[TrialRecord] = []
    empty: list[str] = []
    stray: list[str] = []
    for (trial_dir, _), item in zip(found, parsed):
        if item is None:
            empty.append(trial_dir)
        elif isinstance(item, OutsideLayout):
            stray.append(item.path)
        elif isinstance(item, RunRecordError):
            if on_error != "warn":
                raise item
            notes.append(f"{item}; trial skipped")
        else:
            trials.append(item)
            notes.extend(item.notes)
    notes[:0] = _skipped_notes(empty, stray)
    keep = _check_duplicates(trials, _entry_names(trials), on_error, notes)
    trials = [trials[i] for i in keep]
    notes.extend(_target_notes(trials, algoperf_version))
    # TimeTrial trials first, then AlgoPerf ones: the eval rows come out sorted by trial_id.
    trials.sort(key=lambda t: t.layout != "timetrial")
    evals, trial_table = _tables(trials)
    bad = impossible_rows(evals, trial_table)
    if bad:
        if on_error != "warn":
            raise bad[0]
        notes.extend(f"{e}; trial skipped" for e in bad)
        skip = {e.path for e in bad}
        trials = [t for t in trials if evals_path(t.trial_dir, t.layout) not in skip]
        evals, trial_table = _tables(trials)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Runs(evals=evals, trials=trial_table, warnings=notes)


def _tables(trials: list[TrialRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evals, trials) tables of `trials` (TimeTrial ones first), eval rows by (trial_id, eval_index)."""
    timetrial = [t for t in trials if t.layout == "timetrial"]
    algoperf = [t for t in trials if t.layout == "algoperf"]
    frames = []
    if timetrial:
        frames.extend(_timetrial_frames(timetrial, 0))
    if algoperf:
        frames.extend(_algoperf_frames(algoperf, len(timetrial)))
    trial_table = _trial_frame(trials)
    if frames:
        evals = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            evals = evals.sort_values(["trial_id", "eval_index"], kind="stable", ignore_index=True)
    else:
        evals = pd.DataFrame({"trial_id": np.zeros(0, np.int64), "eval_index": np.zeros(0, np.int64)})
        for key in REQUIRED_COLUMNS:
            evals[key] = np.zeros(0)
    return _attach_trial_columns(evals, trial_table), trial_table


def _attach_trial_columns(evals: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Copy each trial's metadata onto its evaluation rows (categoricals share codes: cheap)."""
    ids = evals["trial_id"].to_numpy()
    extra = {}
    for name in TRIAL_COLUMNS:
        if name in _TRIAL_ONLY:
            continue
        column = trials[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()[ids]
            extra[name] = pd.Categorical.from_codes(codes, dtype=column.dtype)
        else:
            extra[name] = column.array.take(ids) if len(ids) else column.array[:0]
    metadata = pd.DataFrame(extra, index=evals.index)
    numbers = evals.drop(columns=["trial_id", "eval_index"])
    return pd.concat([evals[["trial_id", "eval_index"]], metadata, numbers], axis=1)


def select_trials(runs: Runs, keep: Sequence[bool] | np.ndarray) -> Runs:
    """`runs` with only the trials where `keep` (one flag per row of `runs.trials`) is true, their
    evaluations, and trial ids renumbered from 0 (a trial's id is its row in `trials`)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(runs.trials),):
        raise ValueError(f"keep needs one flag per trial ({len(runs.trials)}), got shape {keep.shape}")
    new_id = np.cumsum(keep) - 1
    trials = runs.trials[keep].reset_index(drop=True)
    trials["trial_id"] = np.arange(len(trials), dtype=np.int64)
    tid = runs.evals["trial_id"].to_numpy()
    evals = runs.evals[keep[tid]].reset_index(drop=True)
    evals["trial_id"] = new_id[tid[keep[tid]]]
    for frame in (trials, evals):
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].cat.remove_unused_categories()
    return Runs(evals=evals, trials=trials, warnings=list(runs.warnings))


def hyperparameters(runs: Runs) -> pd.DataFrame:
    """One row per trial with each hyperparameter in its own column (NaN where absent)."""
    points = [json.loads(h) if isinstance(h, str) else {} for h in runs.trials["hparams"]]
    table = pd.DataFrame.from_records(points, index=runs.trials.index)
    return pd.concat([runs.trials[["trial_id", "entry", "workload", "study", "trial"]], table], axis=1)
