"""Read one trial directory, in TimeTrial's layout or in AlgoPerf's, into a `TrialRecord`.

TimeTrial: `meta.json` (identity, target, hardware), `hparams.json`, `eval.jsonl` (one JSON
object per evaluation), `summary.json`. AlgoPerf: `eval_measurements.csv` under
`<submission>/study_<k>/<workload>_<jax|pytorch>/trial_<i>/`, plus `hparams.json`,
`meta_data_0.json` (seed, hardware) and `flags_0.json` (ruleset) when present.

Targets: a TimeTrial trial states its own in meta.json. An AlgoPerf-layout trial is scored
against AlgoPerf's published target for its workload (scoring/data/algoperf_targets.json, for
the chosen AlgoPerf version); for a workload that table does not know (TimeTrial's mini suite),
against the `timetrial_target.json` that `harness.export_algoperf` writes beside the CSV. When
both exist and differ, AlgoPerf's wins (every AlgoPerf-layout run of a workload is then timed to
the same target, the one `--algoperf_version` names) and the trial carries a `target_note`.

Every problem raises `RunRecordError` naming the file; a truncated last line (which a killed
process can leave) is an error, or, with on_error="warn", dropped with a note. An
eval_measurements.csv outside AlgoPerf's layout raises `OutsideLayout`, which loading skips.

Each trial carries its hardware `fingerprint` (as recorded) and its `hardware_class`, what
scoring compares: accelerator model and count for accelerator runs, the fingerprint otherwise.

Budget scaling and contention (TimeTrial's mini suite; `harness/machine_profile.py`,
`harness/contention.py`) are read here too. meta.json's `budget_scale` (the factor the budget was
scaled by), `budget_scale_source` ("profile": this machine's calibration; "flag": the user's
--budget_scale; "none": not scaled) and `machine_profile` (null, or the profile's `id`,
`created`, and this workload's `seconds_per_step` and `reference_seconds_per_step`) give the
trial's `profile_key`, what scoring compares like the hardware class (`profile_key_of`);
summary.json's `contended` flag and `contention` figures say whether other processes used the
machine's CPUs during its timed steps. Records without these keys (older ones, and AlgoPerf's
layout) read as scale 1.0, source "none", no profile, not contended.

Containers (`submit.py --docker`, `harness/containers.py`): meta.json's `docker_image_id` is the ID
(content digest, "sha256:...") of the Docker image the trial's worker ran in, null when it ran
natively, and its `docker` object names the image it was run by (`image`). A trial's
`docker_image` is that ID, or NATIVE ("none") for a trial without a container (older records
without the key, and AlgoPerf's layout); scoring compares it like the hardware class
(`scoring/images.py`). An export's timetrial_target.json carries the same two keys, read the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.export_algoperf import REQUIRED_TARGET_KEYS, TARGET_FILE
from scoring.targets import TargetSet, WorkloadTarget

try:  # optional: about 3x faster JSON parsing; the standard library is the fallback
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

TIMETRIAL_META = "meta.json"
TIMETRIAL_EVALS = "eval.jsonl"
ALGOPERF_EVALS = "eval_measurements.csv"
HPARAMS = "hparams.json"
SUMMARY = "summary.json"
REQUIRED_COLUMNS = ("global_step", "accumulated_submission_time")
ALGOPERF_LAYOUT = "<submission>/study_<k>/<workload>_<jax|pytorch>/trial_<i>/"
_WORKLOAD_DIR = re.compile(r"^(?P<workload>.+)_(?P<framework>jax|pytorch)(?:-\d{4}(?:-\d{2}){5})?$")
_STUDY_DIR = re.compile(r"^study_(\d+)$")
TRIAL_DIR = re.compile(r"^trial_(\d+)$")
NATIVE = "none"  # the `docker_image` of a trial whose worker ran without a container
_META_KEYS = (
    "workload",
    "framework",
    "submission",
    "study",
    "trial",
    "target_metric_name",
    "metric_direction",
    "validation_target_value",
)


class RunRecordError(ValueError):
    """A run record that cannot be read; the message starts with the offending file."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutsideLayout(RunRecordError):
    """An eval_measurements.csv that is not at AlgoPerf's `<submission>/study_<k>/<workload>_<jax|pytorch>/
    trial_<i>/` (AlgoPerf's published logs hold such stray copies); loading skips it with a note."""


@dataclass
class TrialRecord:
    """One trial as read from disk (metadata, and its evaluations as arrays or CSV text)."""

    layout: str
    trial_dir: str
    root: str
    submission: str
    workload: str
    framework: str
    study: int
    trial: int
    target_metric: str
    direction: str
    validation_target: float
    test_target: float | None = None
    max_runtime_sec: float | None = None
    ruleset: str | None = None
    seed: int | None = None
    hardware: str = "unknown"  # the fingerprint as recorded (CPU, accelerator, ...)
    hardware_desc: str = "unknown"
    hardware_class: str = "unknown"  # what scoring compares: see `hardware_class_of`
    host_cpu: str | None = None
    hparams: str | None = None
    status: str | None = None
    summary_time_to_target: float | None = None
    keys: tuple[str, ...] = ()  # TimeTrial: eval.jsonl as column names and a values matrix
    values: np.ndarray | None = None
    csv_header: str | None = None  # AlgoPerf: header line and body text of the CSV
    csv_body: str = ""
    n_evals: int = 0
    notes: list[str] = field(default_factory=list)
    target_note: str | None = None  # AlgoPerf layout: its timetrial_target.json differs from AlgoPerf's
    budget_scale: float = 1.0
    budget_scale_source: str = "none"  # one of BUDGET_SCALE_SOURCES
    machine_profile: str | None = None  # meta.json's machine_profile as canonical JSON
    profile_key: str = "none"  # what scoring compares: see `profile_key_of`
    contended: bool = False  # summary.json: other processes used the CPUs during the timed steps
    contention: str | None = None  # summary.json's contention figures as canonical JSON
    docker_image: str = NATIVE  # the Docker image's ID, or NATIVE: see `_docker_image`
    docker_image_name: str | None = None  # the name the image was run by (meta.json's docker.image)


def _try_read(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunRecordError(path, f"cannot read ({e.strerror})") from e


def _loads(data: bytes) -> object:
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity literals, or a real error: the standard parser says which
    return json.loads(data)


def _parse_json(path: str, data: bytes, what: str) -> object:
    try:
        return _loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        ends_early = isinstance(e, json.JSONDecodeError) and e.pos >= len(data.rstrip())
        raise RunRecordError(path, f"{'truncated' if ends_early else 'malformed'} {what} ({e})") from e


def _read_json(path: str, what: str, required: bool = True) -> object:
    data = _try_read(path)
    if data is None:
        if required:
            raise RunRecordError(path, "missing")
        return None
    return _parse_json(path, data, what)


def _as_float(value: object, path: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunRecordError(path, f"{key} must be a number, got {value!r}")
    return float(value)


def _finite(value: object, path: str, key: str) -> float | None:
    """`value` as a finite float, None if null; a string, NaN or ±Infinity is an error naming the file."""
    number = _as_float(value, path, key)
    if number is not None and not math.isfinite(number):
        raise RunRecordError(path, f"{key} must be a finite number, got {number}")
    return number


def recorded_target(path: str, facts: dict, workload: str) -> WorkloadTarget:
    """The target a TimeTrial record states in `facts` (meta.json, or the timetrial_target.json an
    export writes), read from the file at `path`: metric, direction, finite validation and test
    targets, and the budget (the trial's own `budget_sec` first, else `max_allowed_runtime_sec`)."""
    missing = [k for k in REQUIRED_TARGET_KEYS if k not in facts]
    if missing:
        raise RunRecordError(path, f"missing key(s) {', '.join(missing)}")
    metric, direction = facts["target_metric_name"], facts["metric_direction"]
    if not isinstance(metric, str) or not metric:
        raise RunRecordError(path, f"target_metric_name must be a metric name, got {metric!r}")
    if direction not in ("min", "max"):
        raise RunRecordError(path, f"metric_direction must be 'min' or 'max', got {direction!r}")
    validation = _finite(facts["validation_target_value"], path, "validation_target_value")
    if validation is None:
        raise RunRecordError(path, "validation_target_value is null")
    budget_key = "budget_sec" if "budget_sec" in facts else "max_allowed_runtime_sec"
    budget = _finite(facts.get(budget_key), path, budget_key)
    if budget is not None and budget <= 0:
        raise RunRecordError(path, f"{budget_key} must be positive, got {budget:g}")
    test = _finite(facts.get("test_target_value"), path, "test_target_value")
    return WorkloadTarget(workload, metric, direction, validation, test, budget)


def _hardware_fingerprint(*parts: object) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


def accelerator_class(model: str, count: object) -> str:
    """The hardware class of an accelerator run, e.g. '8 x Tesla V100-SXM2-16GB' (the same
    string for TimeTrial's `accelerator`/`num_devices` and AlgoPerf's `gpu_model_name`/`gpu_count`)."""
    try:
        n = str(int(count)) if count is not None and not isinstance(count, bool) else "?"
    except (TypeError, ValueError):
        n = str(count)
    return f"{n} x {str(model).strip()}"


def hardware_class_of(fingerprint: str, accelerator: object, count: object) -> str:
    """What runs are compared by: accelerator model and count when there is an accelerator (the
    host CPU does not matter), else the full fingerprint."""
    return accelerator_class(accelerator, count) if accelerator else fingerprint


BUDGET_SCALE_SOURCES = ("profile", "flag", "none")


def profile_key_of(source: str, scale: float, profile: dict | None) -> str:
    """What scoring compares trials by, besides hardware: the machine profile's id when the budget
    was scaled by a profile, 'budget_scale=<x>' when by the user's --budget_scale, else 'none'."""
    if source == "profile":
        return str(profile["id"])
    if source == "flag":
        return f"budget_scale={float(scale)!r}"
    return "none"


def _budget_scaling(path: str, meta: dict) -> tuple[float, str, str | None, str]:
    """(budget_scale, budget_scale_source, machine_profile as canonical JSON, profile key) from
    meta.json at `path`; absent keys mean not scaled. Inconsistent values are errors naming the file."""
    scale = _finite(meta.get("budget_scale", 1.0), path, "budget_scale")
    if scale is None or scale <= 0:
        raise RunRecordError(path, f"budget_scale must be a positive number, got {meta.get('budget_scale')!r}")
    source = meta.get("budget_scale_source", "none")
    if source not in BUDGET_SCALE_SOURCES:
        raise RunRecordError(
            path, f"budget_scale_source must be one of {', '.join(BUDGET_SCALE_SOURCES)}, got {source!r}"
        )
    profile = meta.get("machine_profile")
    if profile is not None and not (isinstance(profile, dict) and isinstance(profile.get("id"), str) and profile["id"]):
        raise RunRecordError(path, f"machine_profile must be null or an object with an 'id', got {profile!r}")
    if source == "profile" and profile is None:
        raise RunRecordError(path, "budget_scale_source is 'profile' but machine_profile is null")
    if source == "none" and scale != 1.0:
        raise RunRecordError(path, f"budget_scale is {scale:g} but budget_scale_source is 'none' (not scaled)")
    canonical = None if profile is None else json.dumps(profile, sort_keys=True)
    return scale, source, canonical, profile_key_of(source, scale, profile)


def _docker_image(path: str, facts: dict) -> tuple[str, str | None]:
    """(docker_image, docker_image_name) from meta.json (or an export's timetrial_target.json) at
    `path`: `docker_image_id`, or NATIVE when it is null or absent, and the name the image was run
    by (`docker.image`, None if not recorded). Wrong types and contradicting keys are errors naming the file."""
    image_id = facts.get("docker_image_id")
    if image_id is not None and not (isinstance(image_id, str) and image_id.strip() and image_id != NATIVE):
        raise RunRecordError(
            path, f"docker_image_id must be null (no container) or a Docker image ID such as 'sha256:...', "
            f"got {image_id!r}"
        )
    docker = facts.get("docker")
    if docker is None:
        return (NATIVE if image_id is None else image_id), None
    if not isinstance(docker, dict):
        raise RunRecordError(path, f"docker must be null (no container) or an object, got {docker!r}")
    if image_id is None:
        raise RunRecordError(path, "docker describes a container but docker_image_id is null")
    recorded = docker.get("image_id", image_id)
    if recorded != image_id:
        raise RunRecordError(path, f"docker.image_id is {recorded!r} but docker_image_id is {image_id!r}")
    name = docker.get("image")
    if name is not None and not isinstance(name, str):
        raise RunRecordError(path, f"docker.image must be null or an image name such as 'timetrial:cpu', got {name!r}")
    return image_id, name or None


def _contention(path: str, summary: dict) -> tuple[bool, str | None]:
    """(contended, contention figures as canonical JSON) from summary.json at `path`."""
    contended = summary.get("contended", False)
    if not isinstance(contended, bool):
        raise RunRecordError(path, f"contended must be true or false, got {contended!r}")
    figures = summary.get("contention")
    if figures is not None and not isinstance(figures, dict):
        raise RunRecordError(path, f"contention must be null or an object, got {figures!r}")
    return contended, None if figures is None else json.dumps(figures, sort_keys=True)


def _canonical_hparams(path: str) -> str | None:
    point = _read_json(path, "hyperparameters", required=False)
    if point is None:
        return None
    if not isinstance(point, dict):
        raise RunRecordError(path, f"hyperparameters must be a JSON object, got {type(point).__name__}")
    return json.dumps(point, sort_keys=True)


def _json_rows(path: str, lines: list[bytes], complete: bool, on_error: str, notes: list[str]) -> list:
    """Parse JSON lines: all at once when they are clean, else line by line to name the bad one."""
    body = b"[" + b",".join(lines) + b"]"
    if orjson is not None:
        try:
            if b"NaN" in body:
                body_ = body.replace(b": NaN", b": null").replace(b":NaN", b":null")
                return orjson.loads(body_)
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if number == len(lines) and not complete:
                problem = f"truncated last line {number} ({e})"
                if on_error != "warn":
                    raise RunRecordError(path, problem) from e
                notes.append(f"{path}: {problem}; dropped that line")
                break
            raise RunRecordError(path, f"malformed JSON on line {number} ({e})") from e
    return rows


def _parse_jsonl(path: str, on_error: str, notes: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """(keys, values) of an eval.jsonl: values[i, j] is line i's number under keys[j] (NaN if
    null or absent). A truncated last line is an error, or dropped with a note."""
    raw = _try_read(path)
    if raw is None:
        return (), np.zeros((0, 0))
    complete = raw.endswith(b"\n") or not raw
    lines = raw.split(b"\n")
    if complete:
        lines.pop()
    lines = [line for line in lines if line.strip()]
    rows = _json_rows(path, lines, complete, on_error, notes) if lines else []
    if not rows:
        return (), np.zeros((0, 0))
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RunRecordError(path, f"line {number} is not a JSON object")
    keys = tuple(rows[0])
    if all(tuple(row) == keys for row in rows):
        matrix = [list(row.values()) for row in rows]
    else:
        keys = tuple(dict.fromkeys(k for row in rows for k in row))
        matrix = [[row.get(k) for k in keys] for row in rows]
    try:
        values = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        for number, row in enumerate(matrix, start=1):
            for key, v in zip(keys, row):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise RunRecordError(path, f"line {number}: {key!r} must be a number, got {v!r}") from None
        raise
    for key in REQUIRED_COLUMNS:
        if key not in keys:
            raise RunRecordError(path, f"line 1 has no {key!r}")
        bad = np.flatnonzero(np.isnan(values[:, keys.index(key)]))
        if len(bad):
            raise RunRecordError(path, f"line {bad[0] + 1} has no {key!r}")
    return keys, values


def _parse_timetrial(trial_dir: str, root: str, meta_bytes: bytes, on_error: str) -> TrialRecord:
    d = trial_dir
    meta_path = os.path.join(d, TIMETRIAL_META)
    meta = _parse_json(meta_path, meta_bytes, "meta.json")
    if not isinstance(meta, dict):
        raise RunRecordError(meta_path, "must be a JSON object")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise RunRecordError(meta_path, f"missing key(s) {', '.join(missing)}")
    target = recorded_target(meta_path, meta, str(meta["workload"]))
    hardware = meta.get("hardware") or {}
    if not isinstance(hardware, dict):
        raise RunRecordError(meta_path, "hardware must be a JSON object")
    gpu = hardware.get("accelerator") or hardware.get("gpu")
    desc = f"{hardware.get('cpu', '?')} / {gpu or 'no GPU'} x{hardware.get('num_devices', '?')}"
    fingerprint = str(hardware.get("fingerprint") or "unknown")
    try:
        study, trial = int(meta["study"]), int(meta["trial"])
    except (TypeError, ValueError):
        raise RunRecordError(
            meta_path, f"study and trial must be integers, got {meta['study']!r}, {meta['trial']!r}"
        ) from None
    t = TrialRecord(
        layout="timetrial",
        trial_dir=d,
        root=root,
        submission=str(meta["submission"]),
        workload=str(meta["workload"]),
        framework=str(meta["framework"]),
        study=study,
        trial=trial,
        target_metric=target.validation_metric,
        direction=target.direction,
        validation_target=target.validation_target,
        test_target=target.test_target,
        max_runtime_sec=target.max_runtime_sec,
        ruleset=meta.get("ruleset"),
        seed=meta.get("rng_seed"),
        hardware=fingerprint,
        hardware_desc=desc,
        hardware_class=hardware_class_of(fingerprint, gpu, hardware.get("num_devices")),
        host_cpu=hardware.get("cpu"),
    )
    t.budget_scale, t.budget_scale_source, t.machine_profile, t.profile_key = _budget_scaling(meta_path, meta)
    t.docker_image, t.docker_image_name = _docker_image(meta_path, meta)
    t.hparams = _canonical_hparams(os.path.join(d, HPARAMS))
    summary_path = os.path.join(d, SUMMARY)
    try:
        summary = _read_json(summary_path, "summary.json", required=False)
        if summary is not None:
            if not isinstance(summary, dict):
                raise RunRecordError(summary_path, "must be a JSON object")
            time_to_target = _as_float(summary.get("time_to_target"), summary_path, "time_to_target")
            t.contended, t.contention = _contention(summary_path, summary)
            t.status, t.summary_time_to_target = summary.get("status"), time_to_target
    except RunRecordError as e:
        if on_error != "warn":
            raise
        t.notes.append(f"{e}; summary ignored")
    t.keys, t.values = _parse_jsonl(os.path.join(d, TIMETRIAL_EVALS), on_error, t.notes)
    t.n_evals = len(t.values)
    return t


def _split_csv(path: str, raw: bytes, on_error: str, notes: list[str]) -> tuple[str, str, int]:
    """(header, body, number of rows) of an eval_measurements.csv, checking every row's width."""
    text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip():
        raise RunRecordError(path, "empty file (no header)")
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()
    header = lines[0]
    if not complete and len(lines) == 1:
        raise RunRecordError(path, "truncated header")
    columns = header.split(",")
    for key in REQUIRED_COLUMNS:
        if key not in columns:
            raise RunRecordError(path, f"no {key!r} column in header")
    if '"' in text:
        raise RunRecordError(path, "quoted fields are not expected in eval_measurements.csv")
    width = header.count(",")
    body = lines[1:]
    for number, line in enumerate(body, start=2):
        if line.count(",") != width or not line.strip():
            if number == len(lines) and not complete:
                problem = f"truncated last line {number}"
                if on_error != "warn":
                    raise RunRecordError(path, problem)
                notes.append(f"{path}: {problem}; dropped that line")
                body.pop()
                break
            raise RunRecordError(path, f"line {number} has {line.count(',') + 1} fields, header has {width + 1}")
    return header, "".join(line + "\n" for line in body), len(body)


def _json_object(path: str) -> dict | None:
    data = _read_json(path, os.path.basename(path), required=False)
    return data if isinstance(data, dict) else None


def _target_difference(own: WorkloadTarget, published: WorkloadTarget) -> str | None:
    """How a recorded target differs from AlgoPerf's published one, or None if it does not."""
    mine = (own.validation_metric, own.direction)
    theirs = (published.validation_metric, published.direction)
    if mine == theirs and math.isclose(own.validation_target, published.validation_target, rel_tol=1e-12):
        return None
    return (
        f"states {own.validation_metric} {own.direction} {own.validation_target:g}, "
        f"AlgoPerf's is {published.validation_metric} {published.direction} {published.validation_target:g}"
    )


def _algoperf_target(trial_dir: str, workload: str, targets: TargetSet
                     ) -> tuple[WorkloadTarget, bool, str | None, dict | None]:
    """(target, whether it is AlgoPerf's published one, note, the TARGET_FILE's facts or None) of an
    AlgoPerf-layout trial: AlgoPerf's target when `targets` knows the workload (the note says how a
    TARGET_FILE beside the CSV differs), else the TARGET_FILE's; neither is an error naming the CSV."""
    path = os.path.join(trial_dir, TARGET_FILE)
    facts = _read_json(path, TARGET_FILE, required=False)
    own = None
    if facts is not None:
        if not isinstance(facts, dict):
            raise RunRecordError(path, "must be a JSON object")
        if str(facts.get("workload", workload)) != workload:
            raise RunRecordError(path, f"is for workload {facts['workload']!r}, but its directory is for {workload!r}")
        own = recorded_target(path, facts, workload)
    if own is not None and workload not in targets.workloads:
        return own, False, None, facts
    try:
        published = targets.get(workload)
    except KeyError as e:
        problem = f"{e.args[0]}; and no {TARGET_FILE} beside it (python -m harness.export_algoperf writes one)"
        raise RunRecordError(os.path.join(trial_dir, ALGOPERF_EVALS), problem) from None
    note = _target_difference(own, published) if own is not None else None
    return published, True, note and f"{path} {note}", facts


def _parse_algoperf(trial_dir: str, root: str, raw: bytes, on_error: str, targets: TargetSet) -> TrialRecord:
    d = trial_dir
    csv_path = os.path.join(d, ALGOPERF_EVALS)
    parts = Path(d).parts
    wl = _WORKLOAD_DIR.match(parts[-2]) if len(parts) >= 4 else None
    study = _STUDY_DIR.match(parts[-3]) if len(parts) >= 4 else None
    if not (wl and study):
        raise OutsideLayout(csv_path, f"not in AlgoPerf's layout {ALGOPERF_LAYOUT}")
    workload = wl["workload"]
    target, published, target_note, facts = _algoperf_target(d, workload, targets)
    t = TrialRecord(
        layout="algoperf",
        trial_dir=d,
        root=root,
        submission=parts[-4],
        workload=workload,
        framework=wl["framework"],
        study=int(study.group(1)),
        trial=int(TRIAL_DIR.match(parts[-1]).group(1)),
        target_metric=target.validation_metric,
        direction=target.direction,
        validation_target=target.validation_target,
        test_target=target.test_target,
        max_runtime_sec=target.max_runtime_sec,
        target_note=target_note,
    )
    meta = _json_object(os.path.join(d, "meta_data_0.json"))
    if meta is not None:
        t.seed = meta.get("rng_seed")
        cpu, gpu, n = meta.get("cpu_model_name"), meta.get("gpu_model_name"), meta.get("gpu_count")
        if cpu or gpu:
            t.hardware = _hardware_fingerprint(cpu, gpu, n)
            t.hardware_desc = f"{cpu or '?'} / {gpu or 'no GPU'} x{n if n is not None else '?'}"
            t.hardware_class = hardware_class_of(t.hardware, gpu, n)
            t.host_cpu = cpu
    flags = _json_object(os.path.join(d, "flags_0.json"))
    if flags is not None:
        t.ruleset = flags.get("tuning_ruleset")
        if t.seed is None:
            t.seed = flags.get("rng_seed")
    if facts is not None:  # an export of TimeTrial records: budget scaling, contention and image, as recorded
        facts_path = os.path.join(d, TARGET_FILE)
        t.budget_scale, t.budget_scale_source, t.machine_profile, t.profile_key = _budget_scaling(facts_path, facts)
        t.contended, t.contention = _contention(facts_path, facts)
        t.docker_image, t.docker_image_name = _docker_image(facts_path, facts)
    t.hparams = _canonical_hparams(os.path.join(d, HPARAMS))
    t.csv_header, t.csv_body, t.n_evals = _split_csv(csv_path, raw, on_error, t.notes)
    if published and t.ruleset == "self" and t.max_runtime_sec is not None:
        t.max_runtime_sec *= targets.self_tuning_budget_factor
    return t


def read_trial(trial_dir: str, root: str, on_error: str, targets: TargetSet) -> TrialRecord | RunRecordError | None:
    """The trial in `trial_dir` (TimeTrial if it has meta.json, AlgoPerf if it has
    eval_measurements.csv), the error that stops it from being read, or None if neither."""
    try:
        meta = _try_read(os.path.join(trial_dir, TIMETRIAL_META))
        if meta is not None:
            return _parse_timetrial(trial_dir, root, meta, on_error)
        raw = _try_read(os.path.join(trial_dir, ALGOPERF_EVALS))
        if raw is not None:
            return _parse_algoperf(trial_dir, root, raw, on_error, targets)
        return None
    except RunRecordError as e:
        return e
