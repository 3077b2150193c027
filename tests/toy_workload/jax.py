"""The toy workload in JAX: a linear classifier on the blobs of `workload.py`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import linen as nn

from harness.backends.jax.workload import JaxWorkload

# The folder is also loaded by path (tests/ need not be importable): its workload.py beside this file.
_spec = importlib.util.spec_from_file_location("timetrial_toy_facts", Path(__file__).with_name("workload.py"))
_facts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_facts)


class LinearModel(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool, dropout_rate=None):
        return nn.Dense(3, name="head")(x)


class Workload(_facts.ToyWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return LinearModel()

    def eval_sums(self, logits, batch):
        targets = batch["targets"]
        return {
            "loss": -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1).sum(),
            "errors": (logits.argmax(-1) != targets).sum(),
            "count": jnp.asarray(float(len(targets))),
        }
