"""AlgoPerf search spaces: validation and seeded quasi-random draws."""

from __future__ import annotations

import math

import pytest

from harness import search_space
from harness.errors import UserInputError

SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "one_minus_beta1": {"min": 0.02, "max": 0.5, "scaling": "linear"},
    "label_smoothing": {"feasible_points": [0.1, 0.2]},
}


def test_draws_stay_in_range_and_cover_it():
    points = search_space.draw(SPACE, 64, seed=0)
    lrs = [p["learning_rate"] for p in points]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # Log scaling: about half the draws fall below the geometric midpoint 1e-3.
    assert 24 <= sum(lr < 1e-3 for lr in lrs) <= 40
    assert {p["label_smoothing"] for p in points} == {0.1, 0.2}
    assert all(0.02 <= p["one_minus_beta1"] <= 0.5 for p in points)


def test_the_same_seed_repeats_and_another_seed_draws_distinct_points():
    assert search_space.draw(SPACE, 5, seed=3) == search_space.draw(SPACE, 5, seed=3)
    a = {p["learning_rate"] for p in search_space.draw(SPACE, 5, seed=3)}
    b = {p["learning_rate"] for p in search_space.draw(SPACE, 5, seed=4)}
    assert not a & b


def test_explicit_points_are_taken_in_order():
    points = [{"learning_rate": 0.1}, {"learning_rate": 0.2}, {"learning_rate": 0.3}]
    assert search_space.draw(points, 2, seed=9) == points[:2]
    with pytest.raises(UserInputError, match="4 trials asked for but the search space lists 3"):
        search_space.draw(points, 4, seed=0)


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "expected a non-empty list"),
        ([{}], "point 0 must be a non-empty object"),
        ({"lr": 0.1}, "'lr' must be an object"),
        ({"lr": {"min": 1}}, "'lr' lacks max, scaling"),
        ({"lr": {"min": 2, "max": 1, "scaling": "linear"}}, "min <= max"),
        ({"lr": {"min": math.nan, "max": 1, "scaling": "linear"}}, "finite numbers"),
        ({"lr": {"feasible_points": []}}, "non-empty list"),
    ],
)
def test_malformed_spaces_are_rejected_with_the_reason(space, message):
    with pytest.raises(UserInputError, match=message):
        search_space.validate(space)
