"""Fixtures shared by the tests: the toy workload, fake time, and a machine profile for this machine."""

from __future__ import annotations

import os

import pytest

from harness import machine_profile
from harness.discovery import available_workloads, load_workload
from support import TOY_WORKLOAD, FakeTime


@pytest.fixture(autouse=True, scope="session")
def reference_machine_profile(tmp_path_factory):
    """A profile in which this machine runs every mini workload exactly as fast as the calibration
    machine (budget scale 1), so that tests run the documented budgets without calibrating first.
    `$TIMETRIAL_PROFILE_DIR` points at it, for this process and the ones it starts."""
    directory = tmp_path_factory.mktemp("profiles")
    workloads = [load_workload(name, "pytorch", directory) for name in available_workloads("pytorch", suite="mini")]
    hardware, software = machine_profile.machine(workloads[0])
    profile = machine_profile.new_profile(hardware, software)
    profile["workloads"] = {w.name: {"seconds_per_step": w.calibration_seconds_per_step}
                            for w in workloads if machine_profile.calibrated(w)}
    machine_profile.save(machine_profile.profile_path(hardware, software, directory), profile)
    before = os.environ.get(machine_profile.PROFILE_DIR_VARIABLE)
    os.environ[machine_profile.PROFILE_DIR_VARIABLE] = str(directory)
    yield profile
    if before is None:
        del os.environ[machine_profile.PROFILE_DIR_VARIABLE]
    else:
        os.environ[machine_profile.PROFILE_DIR_VARIABLE] = before


@pytest.fixture
def toy_workload(tmp_path):
    return load_workload(str(TOY_WORKLOAD), "pytorch", tmp_path / "data")

@pytest.fixture
def fake_time():
    return FakeTime()
