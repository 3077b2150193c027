"""One package per framework: everything in TimeTrial that imports a framework, except the models.

`harness/backends/torch/` and `harness/backends/jax/` hold the framework's side of the workload API
(device placement, sync, seeding, losses, evaluation forward passes), checkpoints, the short form
of a submission, and the submission library's framework code (schedules, averaging, curvature).
Everything that does not depend on a framework (data preparation, splits, epoch order, batching,
evaluation accumulation, metrics, targets, budgets) lives in `harness/` and in each workload's
`workload.py`/`data.py`, and reaches a backend as NumPy arrays. A workload's `torch.py`/`jax.py`
hold its model.
"""
