"""`submissions/<name>/alias.json`: another name for a submission, whose runs keep the submission's own name."""

from __future__ import annotations

import json

import pytest

from harness import discovery
from harness.errors import UserInputError


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_sophia_is_sophia_g_in_both_frameworks(framework):
    found = discovery.find_submission("sophia", framework)
    assert found == discovery.find_submission("sophia_g", framework)
    assert found.name == "sophia_g" and found.search_space_path.parent.name == "sophia_g"
    assert "sophia" not in discovery.available_submissions(framework)  # listed once, under its own name


def test_an_alias_to_a_missing_submission_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "nadamw").mkdir()
    (tmp_path / "nadamw" / "torch.py").write_text("")
    (tmp_path / "fast").mkdir()
    (tmp_path / "fast" / "alias.json").write_text(json.dumps({"submission": "nadamw"}))
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "alias.json").write_text(json.dumps({"submission": "nadamv"}))
    monkeypatch.setattr(discovery, "SUBMISSIONS_DIR", tmp_path)
    assert discovery.find_submission("fast", "pytorch").path == tmp_path / "nadamw" / "torch.py"
    with pytest.raises(UserInputError, match="names 'nadamv', which is not a submission folder"):
        discovery.find_submission("typo", "pytorch")
