"""An optimizer step that happens only when a traced condition holds, for optax transformations written
here whose reference (torch) implementation skips its update in some cases (Prodigy and D-Adaptation skip
steps where the learning rate or their distance estimate's denominator is zero)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def step_if(active: jax.Array, updates, stepped_state, skipped_state):
    """(updates, stepped_state) where `active`, else (zero updates, skipped_state): both branches are computed
    and selected elementwise, so it stays one jitted computation."""
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), stepped_state, skipped_state)
    return jax.tree_util.tree_map(lambda u: jnp.where(active, u, 0), updates), state
