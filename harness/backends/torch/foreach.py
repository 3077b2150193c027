"""A base for element-wise optimizers written with torch's `_foreach` ops.

`step()` evaluates the closure (with gradients on), then, for each parameter group with
gradients, creates missing per-parameter state with `init_state`, increments `state["step"]`,
and hands the group's parameters, gradients and states to `update_group`.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch


def evaluate_closure(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """The loss of `closure` computed with gradients on (inside an optimizer's no-grad `step`)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def groups_with_gradients(optimizer: torch.optim.Optimizer) -> Iterator[tuple[dict, list[torch.Tensor]]]:
    """(group, its parameters that have gradients) for every group with at least one."""
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            yield group, params


class ForeachOptimizer(torch.optim.Optimizer):
    state_keys: tuple[str, ...] = ()  # per-parameter buffers, created as zeros like the parameter

    def update_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                     states: list[dict], t: int) -> None:
        """Update one group in place; `t` is the (shared) step count, starting at 1."""
        raise NotImplementedError

    def _states(self, params: list[torch.Tensor]) -> list[dict]:
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                for key in self.state_keys:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            states.append(state)
        return states

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, params in groups_with_gradients(self):
            states = self._states(params)
            self.update_group(group, params, [p.grad for p in params], states, states[0]["step"])
        return loss
