"""One AdamW step in PyTorch and in JAX from the same weights on the same batch, for the parity tests.

Adam's first step moves every weight by about the learning rate, in the direction of its gradient's
sign, so the two frameworks' moves agree wherever a gradient is clearly non-zero: compared
elementwise (rtol 1e-3), at least 99 % of each parameter's entries must agree (a gradient within
float32 noise of 0 may take either sign).
"""

from __future__ import annotations

import copy

import jax
import numpy as np
import optax
import torch

from harness import spec

LR, WEIGHT_DECAY = 1e-3, 0.1


def adamw_moves(torch_workload, model, jax_workload, params, model_state, batch, to_flax) -> tuple[dict, dict]:
    """(JAX's moves, torch's moves as a Flax tree) of one AdamW step; `model` itself is left unchanged."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()
    expected = to_flax(model)

    jax_batch = jax_workload.to_device(batch)

    def mean_loss(p):
        out, _ = jax_workload.model_fn(p, jax_batch, model_state, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
        summed = jax_workload.loss_fn(jax_batch["targets"], out)
        return summed["summed"] / summed["n_valid_examples"]

    transformation = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    updates, _ = transformation.update(jax.grad(mean_loss)(params), transformation.init(params), params)
    moved = jax.tree_util.tree_map(lambda new, old: np.asarray(new) - np.asarray(old),
                                   optax.apply_updates(params, updates), params)
    return moved, jax.tree_util.tree_map(lambda new, old: np.asarray(new) - np.asarray(old), expected, params)


def assert_moves_agree(moved: dict, expected: dict) -> None:
    """Each parameter's moves agree in at least 99 % of its entries. The key third of a fused `qkv`
    bias is only checked to move little: softmax ignores a shift shared by all keys, so its gradient
    is float32 noise, which Adam's first step turns into a move of noise / (noise + ε) of the rate."""
    pairs = zip(jax.tree_util.tree_leaves_with_path(moved), jax.tree_util.tree_leaves(expected))
    for (path, got), want in pairs:
        if [getattr(entry, "key", None) for entry in path[-2:]] == ["qkv", "bias"]:
            keys = slice(len(got) // 3, 2 * len(got) // 3)
            assert np.abs(got[keys]).max() < 0.05 * LR and np.abs(want[keys]).max() < 0.05 * LR
            got, want = np.delete(got, keys), np.delete(want, keys)
        agree = np.isclose(got, want, rtol=1e-3, atol=1e-6)
        assert agree.mean() > 0.99, jax.tree_util.keystr(path)
