"""Workloads, one folder each: `workload.py` (facts, data), `torch.py` (model), found by folder name."""
