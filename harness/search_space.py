"""AlgoPerf's tuning search-space JSON, validated, and quasi-random draws from it.

Two forms are accepted:

* a list of explicit points, `[{"learning_rate": 0.001, ...}, ...]`: trial i gets point i;
* a dict of ranges, `{name: {"min": a, "max": b, "scaling": "linear"|"log"}}` or
  `{name: {"feasible_points": [...]}}`: trial i gets the i-th point of a scrambled Halton
  sequence (scipy.stats.qmc.Halton) seeded by the study, so every study draws distinct points.
  A unit coordinate u maps to a + u(b - a) (linear), exp(log a + u(log b - log a)) (log), or
  feasible_points[floor(u * k)].
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scipy.stats import qmc

from harness.errors import UserInputError

Point = dict[str, Any]


def _check_range(source: str, name: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise UserInputError(f"{source}: {name!r} must be an object with min/max/scaling or feasible_points")
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        if not isinstance(points, list) or not points:
            raise UserInputError(f"{source}: {name!r}.feasible_points must be a non-empty list")
        return
    missing = {"min", "max", "scaling"} - spec.keys()
    if missing:
        raise UserInputError(f"{source}: {name!r} lacks {', '.join(sorted(missing))}")
    low, high, scaling = spec["min"], spec["max"], spec["scaling"]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) or low > high:
        raise UserInputError(f"{source}: {name!r} needs finite numbers min <= max, got {low!r}, {high!r}")
    if scaling not in ("linear", "log"):
        raise UserInputError(f"{source}: {name!r}.scaling must be 'linear' or 'log', got {scaling!r}")
    if scaling == "log" and low <= 0:
        raise UserInputError(f"{source}: {name!r} has log scaling but min {low!r} <= 0")


def validate(space: Any, source: str = "search space") -> list[Point] | dict[str, dict]:
    """Return `space` if it is a well-formed AlgoPerf search space, else raise naming the problem."""
    if isinstance(space, list):
        if not space:
            raise UserInputError(f"{source}: the list of points is empty")
        for i, point in enumerate(space):
            if not isinstance(point, dict) or not point:
                raise UserInputError(f"{source}: point {i} must be a non-empty object")
        return space
    if isinstance(space, dict) and space:
        for name, spec in space.items():
            _check_range(source, name, spec)
        return space
    raise UserInputError(f"{source}: expected a non-empty list of points or object of ranges")


def load(path: str | Path) -> list[Point] | dict[str, dict]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserInputError(f"cannot read search space {path}: {exc.strerror}") from exc
    try:
        space = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"search space {path} is not valid JSON: {exc}") from exc
    return validate(space, str(path))


def draw(space: list[Point] | dict[str, dict], num_trials: int, seed: int) -> list[Point]:
    """`num_trials` points: the first ones of an explicit list, or seeded Halton draws from ranges."""
    if num_trials < 1:
        raise UserInputError(f"the number of tuning trials must be >= 1, got {num_trials}")
    if isinstance(space, list):
        if num_trials > len(space):
            raise UserInputError(f"{num_trials} trials asked for but the search space lists {len(space)} points")
        return [dict(p) for p in space[:num_trials]]
    names = sorted(space)
    unit = qmc.Halton(d=len(names), scramble=True, seed=seed).random(num_trials)
    return [{name: _scale(space[name], u) for name, u in zip(names, row)} for row in unit]


def _scale(spec: dict, u: float) -> Any:
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        return points[min(int(u * len(points)), len(points) - 1)]
    low, high = spec["min"], spec["max"]
    if spec["scaling"] == "log":
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return float(low + u * (high - low))
