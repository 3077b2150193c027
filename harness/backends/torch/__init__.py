"""PyTorch: the backend of `--framework pytorch` (see `harness/backends/__init__.py`)."""
