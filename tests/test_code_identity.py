"""What a library submission's code hash covers: its folder, the library's shared modules, the
library submissions it imports and its framework's backend package (where the library's schedules,
averaging and curvature code lives)."""

from __future__ import annotations

from harness import code_identity


def test_a_library_submission_hash_covers_its_frameworks_backend_and_nothing_else(tmp_path, monkeypatch):
    library, backends = tmp_path / "submissions", tmp_path / "harness" / "backends"
    files = {library / "algo" / "torch.py": "update = 1\n", library / "__init__.py": "",
             backends / "torch" / "schedules.py": "def cosine(): ...\n", backends / "jax" / "schedules.py": "x = 1\n"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(code_identity, "BACKENDS_DIR", backends)

    def digest() -> str:
        return code_identity.submission_code_hash(library / "algo" / "torch.py", library)

    first = digest()
    (backends / "jax" / "schedules.py").write_text("x = 2\n")  # another framework's backend
    assert digest() == first
    (backends / "torch" / "schedules.py").write_text("def cosine(): return 0\n")
    second = digest()
    assert second != first
    (library / "__init__.py").write_text("# shared\n")
    assert digest() not in (first, second)


def test_a_library_submission_hash_covers_the_library_submissions_it_imports(tmp_path):
    library = tmp_path / "submissions"
    files = {library / "base" / "torch.py": "from submissions.base.common import RATE\n",
             library / "base" / "common.py": "RATE = 1\n",
             library / "mid" / "torch.py": "from submissions import base\n",
             library / "top" / "torch.py": "import math\nfrom submissions.mid.torch import *\n",
             library / "other" / "torch.py": "RATE = 3\n"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def digest() -> str:
        return code_identity.submission_code_hash(library / "top" / "torch.py", library)

    first = digest()
    (library / "other" / "torch.py").write_text("RATE = 4\n")  # not imported
    assert digest() == first
    (library / "base" / "common.py").write_text("RATE = 2\n")  # imported through mid, transitively
    assert digest() != first
