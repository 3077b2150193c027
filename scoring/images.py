"""Docker images: which container image each trial's worker ran in, another thing runs are compared by.

A trial run in a container (`submit.py --docker`, `harness/containers.py`) records the ID of its
image (the content digest, "sha256:..."); its `docker_image` (read in `scoring/readers.py`) is that
ID, and "none" for a trial run natively (older records, AlgoPerf's layout). Two images differ in
the software the submission ran on, and a container in its CPU and memory limits, so their times
are not comparable, nor are those of a container and a native run: scoring refuses trials of more
than one image key, native counting as one (`python -m scoring.report --allow_mixed_images` scores
them together, with a warning), as it refuses more than one hardware class.
"""

from __future__ import annotations

import pandas as pd

from scoring.ingest import Runs, count_phrase
from scoring.readers import NATIVE

GROUP_COLUMNS = ["docker_image", "description", "trials", "entries", "roots", "example"]
SHORT_DIGITS = 12  # hex digits of an image ID shown, as `docker images` shows them


def short_id(image_id: str) -> str:
    """'sha256:' and the first 12 hex digits of an image ID (the first 12 characters of an ID
    without an algorithm prefix)."""
    algorithm, sep, digest = image_id.partition(":")
    return f"{algorithm}:{digest[:SHORT_DIGITS]}" if sep else image_id[:SHORT_DIGITS]


def describe_image(image_id: str, names: list[str]) -> str:
    """'Docker image sha256:abcdef123456 (timetrial:cpu)' (the names the image was run by, if
    recorded), or 'no container' for NATIVE."""
    if image_id == NATIVE:
        return "no container"
    return f"Docker image {short_id(image_id)}" + (f" ({', '.join(names)})" if names else "")


def image_groups(runs: Runs) -> pd.DataFrame:
    """One row per image key: `docker_image` (the ID, or "none"), `description`, `trials`,
    `entries`, `roots`, `example` (a trial directory)."""
    t = runs.trials
    rows = []
    for key, group in t.groupby(t["docker_image"].astype(str), sort=True):
        names = sorted(group["docker_image_name"].dropna().astype(str).unique())
        rows.append(
            {
                "docker_image": key,
                "description": describe_image(key, names),
                "trials": len(group),
                "entries": sorted(group["entry"].astype(str).unique()),
                "roots": sorted(group["root"].astype(str).unique()),
                "example": str(group["trial_dir"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def describe_images(groups: pd.DataFrame) -> str:
    """The report's one-line summary: each image key in words with its trial count."""
    return "; ".join(f"{g.description}: {count_phrase(g.trials, 'trial')}" for g in groups.itertuples())


def mixed_images_message(groups: pd.DataFrame) -> str:
    """Which runs come from which image (`image_groups` with more than one row), in one line."""
    parts = [
        f"{g.description}: {count_phrase(g.trials, 'trial')} of {', '.join(g.entries)} under {', '.join(g.roots)}, "
        f"e.g. {g.example}"
        for g in groups.itertuples()
    ]
    return (
        f"run records come from {len(groups)} different Docker images (a trial run without a container counts "
        "as one), so their times were measured under different software or resource limits: " + "; ".join(parts)
    )
