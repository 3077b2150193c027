"""AlgoPerf's published workload targets and budgets, read from `scoring/data/algoperf_targets.json`.

TimeTrial run records carry their own targets in `meta.json`; these tables are only for runs
recorded in AlgoPerf's layout, whose files do not say what the target was. Each number in the
data file names its source (AlgoPerf's frozen scoring targets, its workload classes, its
documentation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).parent / "data" / "algoperf_targets.json"
ALGOPERF_VERSIONS = ("0.5", "0.6")


@dataclass(frozen=True)
class WorkloadTarget:
    """Target of one workload: reached when `validation/<metric>` <= target ('min') or >= ('max')."""

    workload: str
    metric: str
    direction: str
    validation_target: float
    test_target: float | None
    max_runtime_sec: float | None
    base: str | None = None
    step_hint: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("min", "max"):
            raise ValueError(f"workload {self.workload!r}: direction must be 'min' or 'max', got {self.direction!r}")

    @property
    def validation_metric(self) -> str:
        return f"validation/{self.metric}"


@dataclass(frozen=True)
class TargetSet:
    """One AlgoPerf version: its scored (base) workloads, held-out variants, and every target."""

    version: str
    base_workloads: tuple[str, ...]
    held_out_workloads: tuple[str, ...]
    workloads: Mapping[str, WorkloadTarget]
    self_tuning_budget_factor: float = 1.5

    def get(self, workload: str) -> WorkloadTarget:
        """The target of `workload`; a KeyError naming the known workloads if there is none."""
        try:
            return self.workloads[workload]
        except KeyError:
            raise KeyError(
                f"no AlgoPerf v{self.version} target for workload {workload!r}; "
                f"known: {', '.join(sorted(self.workloads))}"
            ) from None

    def held_out_map(self) -> dict[str, str]:
        """{held-out variant: its base workload} for this version (empty from v0.6 on)."""
        return {w: self.base_of(w) for w in self.held_out_workloads}

    def base_of(self, workload: str) -> str:
        """The base workload a variant belongs to (itself for a base workload)."""
        return self.get(workload).base or workload


def _load_raw(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read targets file {path}: {e}") from e


@lru_cache(maxsize=8)
def algoperf_targets(version: str = "0.6", path: Path = DATA_FILE) -> TargetSet:
    """AlgoPerf's targets for `version` ('0.5' or '0.6') from the data file at `path`."""
    raw = _load_raw(Path(path))
    versions = raw.get("versions", {})
    if version not in versions:
        raise ValueError(f"unknown AlgoPerf version {version!r} in {path}; known: {', '.join(sorted(versions))}")
    spec = versions[version]
    budgets = spec.get("budgets", {})
    workloads: dict[str, WorkloadTarget] = {}
    try:
        for name, w in raw["workloads"].items():
            base = w.get("base")
            workloads[name] = WorkloadTarget(
                workload=name,
                metric=w["metric"],
                direction=w["direction"],
                validation_target=float(w["validation_target"]),
                test_target=None if w.get("test_target") is None else float(w["test_target"]),
                max_runtime_sec=budgets.get(base or name),
                base=base,
                step_hint=w.get("step_hint"),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed workload entry in {path}: {e}") from e
    targets = TargetSet(
        version=version,
        base_workloads=tuple(spec["base_workloads"]),
        held_out_workloads=tuple(spec["held_out_workloads"]),
        workloads=workloads,
        self_tuning_budget_factor=float(spec.get("self_tuning_budget_factor", 1.5)),
    )
    for w in targets.base_workloads + targets.held_out_workloads:
        targets.get(w)
    return targets
