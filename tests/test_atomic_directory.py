"""A directory built through `atomic_directory` appears whole or not at all."""

from __future__ import annotations

import pytest

from harness.atomic_directory import atomic_directory


def marked(version: str):
    """`is_current` for copies whose VERSION file holds `version`."""
    return lambda copy: (copy / "VERSION").is_file() and (copy / "VERSION").read_text() == version


def test_a_build_replaces_an_outdated_copy_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "data" / "prepared"
    target.mkdir(parents=True)
    (target / "VERSION").write_text("1")
    (target / "old.npy").write_text("stale")
    with atomic_directory(target, marked("2")) as building:
        assert building.parent == target.parent and building != target
        assert (target / "old.npy").exists()  # readers still see the old copy while building
        (building / "VERSION").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["VERSION"] and marked("2")(target)
    assert [p.name for p in target.parent.iterdir()] == ["prepared"]


def test_a_failed_build_leaves_the_old_copy_untouched(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "VERSION").write_text("1")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_directory(target, marked("2")) as building:
            (building / "VERSION").write_text("2")
            raise RuntimeError("crash while building")
    assert marked("1")(target)
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_a_current_copy_made_meanwhile_by_another_build_is_kept(tmp_path):
    target = tmp_path / "prepared"
    with atomic_directory(target, marked("2")) as building:
        (building / "VERSION").write_text("2")
        (building / "mine").write_text("")
        target.mkdir()  # a concurrent build renames its complete copy in first
        (target / "VERSION").write_text("2")
    assert marked("2")(target) and not (target / "mine").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]
