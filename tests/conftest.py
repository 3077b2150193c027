"""Fixtures shared by the tests: the toy workload and fake time."""

from __future__ import annotations

import pytest

from harness.discovery import load_workload
from support import TOY_WORKLOAD, FakeTime


@pytest.fixture
def toy_workload(tmp_path):
    return load_workload(str(TOY_WORKLOAD), "pytorch", tmp_path / "data")


@pytest.fixture
def fake_time():
    return FakeTime()
