"""JAX: the backend of `--framework jax` (see `harness/backends/__init__.py`)."""
