"""Content hashes of the code behind a result, recorded in every trial's meta.json.

A rerun whose code differs from the records' is refused (`harness/experiment.py`), so a result is
never reported for code other than the code that produced it. What is hashed:

- a submission named by its own file (`my_algo.py`): that file;
- a submission named after its folder (`my_algo/submission.py`, `my_algo/torch.py`): every Python
  file under that folder (helper modules included);
- a submission of the library (`submissions/<name>/`): also the library's shared modules
  (`submissions/*.py`), the folders of the library submissions it imports (`ema` builds on
  `submissions.nadamw`; followed transitively) and its framework's backend
  (`harness/backends/torch/` for `torch.py`), which holds the library's schedules, averaging and
  curvature code;
- a workload: every Python file in the folders of the classes it is built from (its own folder,
  and e.g. `fashion_mnist/` for `fashion_mnist_vit`), outside the harness.

The harness itself is identified by the git commit in meta.json. `source_hash` covers the whole
code of a checkout (what docker/Dockerfile copies into an image), so that a run in a container is
refused unless the image holds the code of the checkout that plans it.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
from pathlib import Path

SOURCE_FOLDERS = ("harness", "workloads", "submissions", "scoring")
SOURCE_FILES = ("submit.py", "pyproject.toml")
WORKLOAD_MODULES = ("workloads.", "timetrial_workload_")  # the repo's, and those loaded from a path
FOLDER_NAMED = ("submission.py", "torch.py", "jax.py")
BACKENDS_DIR = Path(__file__).resolve().parent / "backends"  # one package per framework, named like its file


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py")
                  if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts))


def files_hash(files: list[Path], root: Path) -> str:
    """SHA-256 over the files' paths relative to `root` and their bytes, in order (so the hash does
    not depend on where a clone or a submission's folder lives)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def source_hash(root: Path) -> str:
    """The hash of a checkout's code: every file of its SOURCE_FOLDERS (caches and dot files aside) and SOURCE_FILES."""
    files = [root / name for name in SOURCE_FILES]
    for folder in SOURCE_FOLDERS:
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts))
    return files_hash(files, root)


def _imported_library_folders(folder: Path, library_dir: Path) -> list[Path]:
    """`folder` and the library submission folders its Python files import (`submissions.<name>`), transitively."""
    found, pending = [folder], [folder]
    while pending:
        for file in _python_files(pending.pop()):
            for node in ast.walk(ast.parse(file.read_bytes(), str(file))):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                if isinstance(node, ast.ImportFrom) and node.module == library_dir.name:  # from submissions import x
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                for name in names:
                    package, _, rest = name.partition(".")
                    imported = library_dir / rest.split(".")[0] if package == library_dir.name and rest else None
                    if imported is not None and imported.is_dir() and imported not in found:
                        found.append(imported)
                        pending.append(imported)
    return found


def submission_code_hash(path: Path, library_dir: Path) -> str:
    """The hash of a submission's code (see the module docstring) for its resolved file `path`."""
    path, library_dir = path.resolve(), library_dir.resolve()
    if path.parent.parent == library_dir:
        backend = BACKENDS_DIR / path.stem
        framework_code = _python_files(backend) if backend.is_dir() else []
        folders = [path.parent] + sorted(_imported_library_folders(path.parent, library_dir)[1:])
        files = [f for folder in folders for f in _python_files(folder)] + sorted(library_dir.glob("*.py")) + framework_code
        return files_hash(files, Path(os.path.commonpath([library_dir, BACKENDS_DIR])))
    return files_hash(_python_files(path.parent) if path.name in FOLDER_NAMED else [path], path.parent)


def workload_code_hash(workload: object) -> str:
    """The hash of the Python files in the folders of the classes `workload` is built from."""
    folders = []
    for cls in type(workload).__mro__:
        if not cls.__module__.startswith(WORKLOAD_MODULES):
            continue  # the harness's and Python's own classes
        folder = Path(inspect.getfile(cls)).resolve().parent
        if folder not in folders:
            folders.append(folder)
    digest = hashlib.sha256()
    for folder in sorted(folders, key=lambda f: f.name):
        digest.update(f"{folder.name}\0{files_hash(_python_files(folder), folder)}\0".encode())
    return digest.hexdigest()
