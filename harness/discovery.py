"""Find workloads and submissions by folder convention; never through a hand-kept registry.

    workloads/<name>/<framework file>      defines class `Workload`
    path/to/my_workload/                   a workload folder outside the repo, same convention
    submissions/<name>/<framework file>    defines AlgoPerf's functions, or `make_optimizer`
    path/to/my_algo.py                     a submission outside the repo, named `my_algo`
    path/to/my_algo/submission.py          AlgoPerf's convention: named after its folder, `my_algo`
    path/to/my_algo/                       a folder holding the framework file or `submission.py`
    submissions/<name>/alias.json          `{"submission": "<other>"}`: <name> is another name for
                                           submissions/<other> (its records carry <other>'s name)

The framework file is `torch.py` for `--framework pytorch` and `jax.py` for `--framework jax`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from harness import algoperf_compat, code_identity, spec
from harness.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_DIR = REPO_ROOT / "workloads"
SUBMISSIONS_DIR = REPO_ROOT / "submissions"
FRAMEWORK_FILES = {"pytorch": "torch", "jax": "jax"}
REQUIRED_FUNCTIONS = ("init_optimizer_state", "update_params")
ALIAS_FILE = "alias.json"
ALGOPERF_FILE = "submission.py"  # AlgoPerf names every submission file so; the folder names it
SEARCH_SPACE_FILES = ("search_space.json", "tuning_search_space.json")  # TimeTrial's name, AlgoPerf's


def _framework_file(framework: str) -> str:
    if framework not in FRAMEWORK_FILES:
        raise UserInputError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORK_FILES)}")
    return FRAMEWORK_FILES[framework]


def _names_with(directory: Path, filename: str) -> list[str]:
    return sorted(p.parent.name for p in directory.glob(f"*/{filename}"))


def available_workloads(framework: str = "pytorch", suite: str | None = None) -> list[str]:
    """Workload names for a framework; with `suite`, only those whose class says `suite = <suite>`."""
    names = _names_with(WORKLOADS_DIR, f"{_framework_file(framework)}.py")
    if suite is None:
        return names
    module = _framework_file(framework)
    return [n for n in names if getattr(importlib.import_module(f"workloads.{n}.{module}").Workload, "suite", None) == suite]


def available_submissions(framework: str = "pytorch") -> list[str]:
    return _names_with(SUBMISSIONS_DIR, f"{_framework_file(framework)}.py")


def load_workload(name: str, framework: str, data_dir: str | Path) -> spec.Workload:
    """Instantiate `workloads/<name>/<framework file>.Workload` (or that file in a folder given by
    path); data is loaded lazily."""
    filename = f"{_framework_file(framework)}.py"
    if "/" in name:
        path = Path(name) / filename
        if not path.is_file():
            raise UserInputError(f"workload folder {name} has no {filename}")
        module = _import_file(f"workload_{path.parent.name}", path.resolve())
    else:
        choices = available_workloads(framework)
        if name not in choices:
            raise UserInputError(
                f"unknown workload {name!r} for framework {framework}; available: {', '.join(choices)}"
            )
        module = importlib.import_module(f"workloads.{name}.{_framework_file(framework)}")
    if not isinstance(getattr(module, "Workload", None), type):
        raise UserInputError(f"{module.__file__} defines no class Workload")
    return module.Workload(data_dir)


def search_space_file(submission_path: Path) -> Path | None:
    """`search_space.json` (or AlgoPerf's `tuning_search_space.json`) beside a submission's file."""
    paths = [submission_path.parent / name for name in SEARCH_SPACE_FILES]
    return next((path for path in paths if path.is_file()), None)


@dataclass(frozen=True)
class SubmissionFile:
    """A submission found by name or path but not imported: all that planning a run needs (its code
    runs only in the trial's worker, under the trial's limits)."""

    name: str
    path: Path

    @property
    def search_space_path(self) -> Path | None:
        return search_space_file(self.path)

    def code_hash(self) -> str:
        """The content hash of the submission's code (`harness/code_identity.py`)."""
        return code_identity.submission_code_hash(self.path, SUBMISSIONS_DIR)


@dataclass(frozen=True)
class Submission:
    """The resolved functions of a submission (AlgoPerf's API; short forms already wrapped)."""

    name: str
    path: Path
    init_optimizer_state: Callable
    update_params: Callable
    prepare_for_eval: Callable | None
    data_selection: Callable
    get_batch_size: Callable[[str], int] | None

    @property
    def search_space_path(self) -> Path | None:
        return search_space_file(self.path)

    @property
    def update_params_takes_train_state(self) -> bool:
        """Whether `update_params` declares AlgoPerf's optional `train_state` argument."""
        return _takes_argument(self.update_params, "train_state")

    def batch_size(self, workload: spec.Workload) -> tuple[int, str | None]:
        """The global batch size for `workload`, and a warning when it is the workload's reference size
        because the submission's `get_batch_size` does not know the workload.

        Published AlgoPerf submissions know only AlgoPerf's workload names and raise (usually
        `ValueError`) or return None for any other; they get the workload's `reference_batch_size`,
        never a batch size chosen for another dataset.
        """
        if self.get_batch_size is None:
            return workload.reference_batch_size, None
        try:
            size = self.get_batch_size(workload.name)
        except Exception as exc:  # noqa: BLE001 - any refusal means "this workload is unknown to me"
            refusal = f"raised {type(exc).__name__}: {exc}"
        else:
            if size is not None:
                if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                    raise UserInputError(f"submission {self.name}: get_batch_size({workload.name!r}) returned {size!r}")
                return size, None
            refusal = "returned None"
        return workload.reference_batch_size, (
            f"submission {self.name}: get_batch_size({workload.name!r}) {refusal}; using the workload's "
            f"reference batch size {workload.reference_batch_size}"
        )


def _takes_argument(function: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or other callable without a signature
        return False


def default_data_selection(
    workload, input_queue, optimizer_state, current_param_container, model_state, hyperparameters, global_step, rng
):
    """AlgoPerf's default: the next batch of the pre-shuffled input queue."""
    return next(input_queue)


def find_submission(name_or_path: str, framework: str) -> SubmissionFile:
    """The name and resolved file of a submission given by name, file or folder (nothing imported).

    A file named like the framework file or AlgoPerf's `submission.py` is named after its folder,
    so `a/submission.py` and `b/submission.py` are the submissions `a` and `b`.
    """
    filename = f"{_framework_file(framework)}.py"
    path = Path(name_or_path)
    if path.suffix == ".py" or path.is_dir() or len(path.parts) > 1:
        if path.is_dir():
            candidates = [path / filename, path / ALGOPERF_FILE]
            path = next((c for c in candidates if c.is_file()), candidates[0])
            if not path.is_file():
                raise UserInputError(f"submission folder {path.parent} has neither {filename} nor {ALGOPERF_FILE}")
        if not path.is_file():
            raise UserInputError(f"submission file {path} does not exist")
        if path.suffix != ".py":
            raise UserInputError(f"submission file {path} is not a Python file (.py)")
        path = path.resolve()
        name = path.parent.name if path.name in (filename, ALGOPERF_FILE) else path.stem
        return SubmissionFile(name, path)
    name = resolve_alias(name_or_path)
    path = SUBMISSIONS_DIR / name / filename
    if not path.is_file():
        raise UserInputError(
            f"unknown submission {name_or_path!r} for framework {framework}; give a path to a .py file "
            f"or one of: {', '.join(available_submissions(framework))}"
        )
    return SubmissionFile(name, path)


def resolve_alias(name: str) -> str:
    """The submission that `submissions/<name>/alias.json` names, or `name` itself. One algorithm keeps one
    name in the records, whichever name ran it, so scoring never counts it twice."""
    alias = SUBMISSIONS_DIR / name / ALIAS_FILE
    if not alias.is_file():
        return name
    target = json.loads(alias.read_text())["submission"]
    if not (SUBMISSIONS_DIR / target).is_dir() or (SUBMISSIONS_DIR / target / ALIAS_FILE).is_file():
        raise UserInputError(f"{alias} names {target!r}, which is not a submission folder")
    return target


def _import_file(name: str, path: Path) -> ModuleType:
    module_name = f"timetrial_{name}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UserInputError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def load_submission(name_or_path: str, framework: str) -> Submission:
    """Load a submission by name (`submissions/<name>`) or by path to its file or folder."""
    found = find_submission(name_or_path, framework)
    name, path = found.name, found.path
    algoperf_compat.install()  # `from algoperf import spec` in the submission means harness.spec
    module = _import_file(f"submission_{name}", path)
    functions = {key: getattr(module, key) for key in dir(module) if not key.startswith("_")}
    if "make_optimizer" in functions and not any(f in functions for f in REQUIRED_FUNCTIONS):
        adapter = importlib.import_module(f"harness.backends.{_framework_file(framework)}.short_form")
        functions.update(adapter.standard_functions(module.make_optimizer, functions.get("SELF_TUNING_DEFAULTS")))
    missing = [f for f in REQUIRED_FUNCTIONS if not callable(functions.get(f))]
    if missing:
        raise UserInputError(
            f"submission {path} defines neither make_optimizer (short form) nor {', '.join(missing)}"
        )
    return Submission(
        name=name,
        path=path,
        init_optimizer_state=functions["init_optimizer_state"],
        update_params=functions["update_params"],
        prepare_for_eval=functions.get("prepare_for_eval"),
        data_selection=functions.get("data_selection", default_data_selection),
        get_batch_size=functions.get("get_batch_size"),
    )
