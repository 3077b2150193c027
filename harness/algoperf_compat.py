"""AlgoPerf's import names for TimeTrial's API, inside TimeTrial's own processes only.

A published AlgoPerf submission starts with

    from algoperf import spec                               # AlgoPerf v0.6
    from algoperf.pytorch_utils import pytorch_setup
    from algoperf import jax_sharding_utils, spec           # AlgoPerf v0.6 in JAX
    from algorithmic_efficiency import spec                 # AlgoPerf up to v0.5

`install()` makes these names resolve to `harness.spec`, `harness.backends.torch.process` and
`harness.backends.jax.sharding` (each imported when the submission first imports it: a torch
submission does not import JAX), so the submission runs unmodified and its enums
(`spec.ForwardPassMode.TRAIN`, ...) are the harness's own.
Nothing is installed on disk: the aliases live in the `sys.modules` of the process that loads a
submission (a trial's worker, or `submit.py` while it plans), so a real AlgoPerf installation in the
user's environment is untouched everywhere else. A module of AlgoPerf that TimeTrial does not
provide fails to import with a message that says which ones it does.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

PACKAGE_NAMES = ("algoperf", "algorithmic_efficiency")
MODULES = {  # AlgoPerf's module -> TimeTrial's, imported when a submission first imports it
    "spec": "harness.spec",
    "pytorch_utils": "harness.backends.torch.process",
    "jax_sharding_utils": "harness.backends.jax.sharding",
}


class _AliasLoader(importlib.abc.Loader):
    """Loads `algoperf.<name>` as TimeTrial's module itself (so its enums and classes are the harness's)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # imported by create_module


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves `import algoperf.<module>` to TimeTrial's module, and any module TimeTrial does not
    provide to one clear error."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, module = fullname.partition(".")
        if package not in PACKAGE_NAMES or not module:
            return None
        if module in MODULES:
            return importlib.util.spec_from_loader(fullname, _AliasLoader(MODULES[module]))
        if module.split(".")[0] not in MODULES:
            raise ModuleNotFoundError(
                f"{fullname} is not provided by TimeTrial's AlgoPerf compatibility layer; it provides "
                + ", ".join(f"{package}.{name}" for name in MODULES)
            )  # no `name=`: `from algoperf import x` would swallow the error and report "unknown location"
        return None


def _alias_package(package_name: str) -> types.ModuleType:
    package = types.ModuleType(package_name, f"TimeTrial's API under AlgoPerf's name ({__name__}).")
    package.timetrial_alias = True
    package.__path__ = []  # a package, so that `from algoperf import spec` imports its submodule

    def __getattr__(name: str):  # `algoperf.spec` after `import algoperf`
        if name in MODULES:
            return importlib.import_module(f"{package_name}.{name}")
        raise AttributeError(f"module {package_name!r} has no attribute {name!r}")

    package.__getattr__ = __getattr__
    return package


def install() -> None:
    """Make AlgoPerf's module names resolve to TimeTrial's API in this process (idempotent)."""
    for package_name in PACKAGE_NAMES:
        if not getattr(sys.modules.get(package_name), "timetrial_alias", False):
            sys.modules[package_name] = _alias_package(package_name)
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
