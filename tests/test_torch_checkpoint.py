"""Checkpoints hold plain data only: what submissions keep in their optimizer state is saved where it
can be (named tuples, deques, helper objects with a state dict, NumPy arrays), the rest is named in a
warning and rebuilt by the fresh `init_optimizer_state`, and a file that would run code is refused."""

from __future__ import annotations

import collections
import enum
import os
import pickle

import numpy as np
import pytest
import torch

from harness.backends.torch import checkpoint as torch_checkpoint

Point = collections.namedtuple("Point", ["learning_rate", "beta2"])


class Colour(enum.Enum):
    RED = 1


class Counter:
    """A submission's helper with a state dict that holds a deque (like LAWA's queue)."""

    def __init__(self) -> None:
        self.queue = collections.deque(maxlen=3)
        self.steps = torch.tensor(0.0)

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def build(model: torch.nn.Module) -> dict:
    """What `init_optimizer_state` would build for `model`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return {
        "optimizer": optimizer,
        "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
        "hyperparameters": Point(0.1, 0.99),
        "counter": Counter(),
        "history": collections.deque([1, 2], maxlen=4),
        "weights": np.arange(3.0),
        "loss_fn": lambda x: x,
        "colour": Colour.RED,
    }


def train(model: torch.nn.Module, state: dict, steps: int) -> None:
    for step in range(steps):
        state["optimizer"].zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        state["optimizer"].step()
        state["scheduler"].step()
        state["counter"].queue.append(torch.full((2,), float(step)))
        state["counter"].steps += 1
        state["history"].append(step * 10)
        state["weights"] = state["weights"] + 1


def test_optimizer_state_round_trips_with_warnings_for_what_is_not_data(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    state = build(model)
    train(model, state, 5)
    path = tmp_path / "latest.pt"
    warnings = torch_checkpoint.save(path, model, None, state, {"global_step": 5, "eval_results": [(1, {"a": 1.0})]})
    assert len(warnings) == 2
    assert "optimizer_state['loss_fn'] (function)" in warnings[0] and "optimizer_state['colour'] (Colour)" in warnings[1]

    fresh_model = torch.nn.Linear(3, 2)
    fresh = build(fresh_model)
    _, restored, loop = torch_checkpoint.load(path, fresh_model, fresh)
    assert loop == {"global_step": 5, "eval_results": [(1, {"a": 1.0})]}
    assert torch.equal(fresh_model.weight, model.weight)
    assert restored["optimizer"] is fresh["optimizer"] and restored["optimizer"].param_groups[0]["params"][0] is fresh_model.weight
    assert restored["optimizer"].state_dict()["state"][0]["step"] == 5
    assert restored["scheduler"].last_epoch == 5 and restored["optimizer"].param_groups[0]["lr"] == pytest.approx(0.025)
    assert restored["hyperparameters"] == Point(0.1, 0.99) and type(restored["hyperparameters"]) is Point
    counter = restored["counter"]
    assert isinstance(counter.queue, collections.deque) and counter.queue.maxlen == 3
    assert [float(t[0]) for t in counter.queue] == [2.0, 3.0, 4.0] and float(counter.steps) == 5
    assert restored["history"] == collections.deque([10, 20, 30, 40], maxlen=4)
    assert isinstance(restored["weights"], np.ndarray) and restored["weights"].tolist() == [5.0, 6.0, 7.0]
    assert restored["loss_fn"] is fresh["loss_fn"] and restored["colour"] is Colour.RED


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "latest.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch_checkpoint.load(path, torch.nn.Linear(3, 2), {})
    assert not (tmp_path / "pwned").exists()
