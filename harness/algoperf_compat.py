"""AlgoPerf's import names for TimeTrial's API, inside TimeTrial's own processes only.

A published AlgoPerf submission starts with

    from algoperf import spec                               # AlgoPerf v0.6
    from algoperf.pytorch_utils import pytorch_setup
    from algorithmic_efficiency import spec                 # AlgoPerf up to v0.5

`install()` makes these names resolve to `harness.spec` and `harness.backends.torch.process`, so the
submission runs unmodified and its enums (`spec.ForwardPassMode.TRAIN`, ...) are the harness's own.
Nothing is installed on disk: the aliases live in the `sys.modules` of the process that loads a
submission (a trial's worker, or `submit.py` while it plans), so a real AlgoPerf installation in the
user's environment is untouched everywhere else. A module of AlgoPerf that TimeTrial does not
provide fails to import with a message that says which ones it does.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import types

PACKAGE_NAMES = ("algoperf", "algorithmic_efficiency")
MODULES = {"spec": "harness.spec", "pytorch_utils": "harness.backends.torch.process"}


class _UnprovidedModuleFinder(importlib.abc.MetaPathFinder):
    """Turns `import algoperf.<anything else>` into one clear error."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, module = fullname.partition(".")
        if package in PACKAGE_NAMES and module and module.split(".")[0] not in MODULES:
            raise ModuleNotFoundError(
                f"{fullname} is not provided by TimeTrial's AlgoPerf compatibility layer; it provides "
                + ", ".join(f"{package}.{name}" for name in MODULES)
            )  # no `name=`: `from algoperf import x` would swallow the error and report "unknown location"
        return None


def _alias_package(package_name: str) -> types.ModuleType:
    package = types.ModuleType(package_name, f"TimeTrial's API under AlgoPerf's name ({__name__}).")
    package.timetrial_alias = True
    package.__path__ = []  # a package, so that `import algoperf.spec` looks up its submodules
    for name, target in MODULES.items():
        module = importlib.import_module(target)
        setattr(package, name, module)
        sys.modules[f"{package_name}.{name}"] = module
    return package


def install() -> None:
    """Make AlgoPerf's module names resolve to TimeTrial's API in this process (idempotent)."""
    for package_name in PACKAGE_NAMES:
        if not getattr(sys.modules.get(package_name), "timetrial_alias", False):
            sys.modules[package_name] = _alias_package(package_name)
    if not any(isinstance(finder, _UnprovidedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _UnprovidedModuleFinder())
