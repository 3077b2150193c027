"""`submit.py --docker` on a real Docker engine, with the image built from this checkout by
docker/build_image.sh (tag timetrial:test; layers are cached, so a rebuild after a code change takes
seconds). Without an engine these tests are skipped, unless TIMETRIAL_REQUIRE_DOCKER=1 (CI sets it:
.ci/run starts an engine), when they fail.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import containers
from harness.errors import UserInputError
from harness.worker import HEARTBEAT_TIMEOUT_SEC
from support import REPO, run_submit

IMAGE = "timetrial:test"
QUICK = ("--workload", "fashion_mnist", "--submission", "nadamw", "--tuning_ruleset", "self")
METRIC_PREFIXES = ("train/", "validation/", "test/")


def _client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        if os.environ.get("TIMETRIAL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"no Docker engine answers ({exc}), and TIMETRIAL_REQUIRE_DOCKER=1")
        pytest.skip(f"no Docker engine answers here ({exc})")


@pytest.fixture(scope="module")
def image():
    client = _client()
    built = subprocess.run(["bash", "docker/build_image.sh", "--tag", IMAGE], cwd=REPO, capture_output=True,
                           text=True, timeout=3600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return client.images.get(IMAGE)


def docker_args(tmp_path: Path, name: str, *extra: str) -> tuple[str, ...]:
    return ("--docker", "--docker_image", IMAGE, "--experiment_dir", str(tmp_path / "runs"),
            "--experiment_name", name, *extra)


def trial_dir(tmp_path: Path, name: str, workload: str = "fashion_mnist", submission: str = "nadamw") -> Path:
    return tmp_path / "runs" / name / f"{workload}_pytorch" / submission / "study_0" / "trial_1"


def metric_columns(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k == "global_step" or k.startswith(METRIC_PREFIXES)} for row in rows]


def trial_containers(client, trial: Path, running_only: bool = False) -> list:
    return client.containers.list(all=not running_only,
                                  filters={"label": f"{containers.LABEL_TRIAL}={trial.resolve()}"})


def image_python(client) -> str:
    output = client.containers.run(IMAGE, entrypoint=["python3", "-c", "import platform; print(platform.python_version())"],
                                   network_mode="none", remove=True)
    return output.decode().strip()


def test_same_image_and_seed_give_identical_metrics_and_records_name_the_image(image, tmp_path):
    env = {**os.environ, "TIMETRIAL_PROFILE_DIR": str(tmp_path / "profiles")}
    steps = ("--max_global_steps", "40", "--eval_every_steps", "20")
    runs = [run_submit(*QUICK, *steps, *docker_args(tmp_path, name), env=env) for name in ("first", "second")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    assert "calibrating fashion_mnist" in runs[0].stderr  # in a container, once: the image's own profile
    assert "calibrating" not in runs[1].stderr
    client = _client()
    python = image_python(client)
    metas = [json.loads((trial_dir(tmp_path, n) / "meta.json").read_text()) for n in ("first", "second")]
    for meta in metas:
        assert meta["docker_image_id"] == image.id
        assert meta["docker"]["image"] == IMAGE and IMAGE in meta["docker"]["tags"]
        assert meta["software"]["python"] == python  # the container's software, not the host's
        assert meta["budget_scale_source"] == "profile"
    assert metas[0]["machine_profile"]["id"] == metas[1]["machine_profile"]["id"]
    rows = [metric_columns(trial_dir(tmp_path, n) / "eval.jsonl") for n in ("first", "second")]
    assert len(rows[0]) >= 3 and [r["global_step"] for r in rows[0]] == [1, 20, 40]
    assert rows[0] == rows[1]
    owned = {p.stat().st_uid for p in (tmp_path / "runs").rglob("*")}
    assert owned == {os.getuid()}  # what the containers wrote belongs to the caller
    assert trial_containers(client, trial_dir(tmp_path, "first")) == []  # removed when done


def test_a_jax_trial_runs_in_the_container_with_the_images_jax(image, tmp_path):
    result = run_submit(*QUICK, "--framework", "jax", "--max_global_steps", "20", "--eval_every_steps", "10",
                        "--budget_scale", "1", *docker_args(tmp_path, "jax"))
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "runs" / "jax" / "fashion_mnist_jax" / "nadamw" / "study_0" / "trial_1"
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["framework"] == "jax" and meta["docker_image_id"] == image.id
    versions = _client().containers.run(
        IMAGE, entrypoint=["python3", "-c", "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__)"],
        network_mode="none", remove=True).decode().split()
    assert [meta["software"][name] for name in ("jax", "flax", "optax")] == versions  # the container's, not the host's
    rows = metric_columns(trial / "eval.jsonl")
    assert [r["global_step"] for r in rows] == [1, 10, 20]
    assert all(math.isfinite(v) for row in rows for k, v in row.items() if k != "global_step")
    assert trial_containers(_client(), trial) == []


def test_a_sweep_runs_each_trial_in_a_container_of_its_own_with_cpus_of_its_own(image, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: one per trial running at once")
    result = run_submit("--workload", "fashion_mnist", "--submission", "nadamw", "--num_tuning_trials", "2",
                        "--max_workers", "2", "--docker_cpus", "1", "--max_global_steps", "20", "--eval_every_steps", "10",
                        "--budget_scale", "1", *docker_args(tmp_path, "sweep"))
    assert result.returncode == 0, result.stderr[-3000:]
    for index in (1, 2):
        trial = tmp_path / "runs" / "sweep" / "fashion_mnist_pytorch" / "nadamw" / "study_0" / f"trial_{index}"
        meta = json.loads((trial / "meta.json").read_text())
        assert meta["docker"]["cpus"] == 1 and meta["hardware"]["cpu_count"] == 1  # as the container saw it
        assert json.loads((trial / "summary.json").read_text())["global_step"] == 20
        assert "validation error_rate" in (trial / "log.txt").read_text()  # a sweep's output goes to log.txt
    assert trial_containers(_client(), trial) == []


PROBE_SUBMISSION = '''
"""Tries to write into the data directory, the image's code and the network, then fails saying how each went."""
import errno
import socket

from harness import spec


def _attempt(action) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "allowed"


def _connect():
    socket.create_connection(("192.0.2.1", 80), timeout=5).close()


def make_optimizer(model, hyperparameters, workload):
    data = _attempt(lambda: open("{data_dir}/written-by-a-trial", "w").close())
    code = _attempt(lambda: open("/opt/timetrial/written-by-a-trial", "w").close())
    network = _attempt(_connect)
    raise RuntimeError(f"data={{data}} code={{code}} network={{network}}")


SELF_TUNING_DEFAULTS = {{}}
'''


def test_a_trial_cannot_write_the_data_or_the_code_nor_reach_the_network(image, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    submission = tmp_path / "probe.py"  # outside the image: mounted read-only at its own path
    submission.write_text(PROBE_SUBMISSION.format(data_dir=data_dir))
    result = run_submit("--workload", "fashion_mnist", "--submission", str(submission), "--tuning_ruleset", "self",
                        "--data_dir", str(data_dir), "--budget_scale", "1", *docker_args(tmp_path, "probe"))
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads((trial_dir(tmp_path, "probe", submission="probe") / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert f"data={errno.errorcode[errno.EROFS]}" in summary["stop_reason"]
    assert f"code={errno.errorcode[errno.EROFS]}" in summary["stop_reason"]
    assert f"network={errno.errorcode[errno.ENETUNREACH]}" in summary["stop_reason"]
    assert not (data_dir / "written-by-a-trial").exists()


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


def _start_submit(args: tuple[str, ...]) -> subprocess.Popen:
    """submit.py in the background, as from a terminal: SIGINT is Ctrl-C even where these tests run in a
    background job (which ignores SIGINT, and passes that on); SIGABRT prints every thread's stack."""
    return subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_kill_9_of_submit_ends_its_container_and_the_rerun_resumes(image, tmp_path):
    client = _client()
    args = (*QUICK, "--max_global_steps", "1000", "--eval_every_steps", "100", "--budget_scale", "1",
            *docker_args(tmp_path, "killed"))
    trial = trial_dir(tmp_path, "killed")
    checkpoint = trial / "checkpoint" / "latest.pt"

    first = _start_submit(args)
    _wait_for(checkpoint.exists, 180, "the first checkpoint")
    first.kill()
    first.wait()
    assert len(trial_containers(client, trial, running_only=True)) == 1  # the owner is gone; its container is not
    _wait_for(lambda: trial_containers(client, trial, running_only=True) == [], HEARTBEAT_TIMEOUT_SEC + 30,
              "the orphaned container to end itself (stale heartbeat)")
    assert trial_containers(client, trial)[0].attrs["State"]["ExitCode"] == containers.KILLED_EXIT_STATUS
    assert json.loads((trial / "summary.json").read_text())["status"] == "running"

    def rows() -> list[dict]:
        return [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]

    second = _start_submit(args)  # killed again, and rerun at once: the orphan is removed before planning
    # two evaluations of the resumed run: a checkpoint saved after the first of them has preemption_count 1
    _wait_for(lambda: sum(r["preemption_count"] == 1 for r in rows()) >= 2, 180, "two evaluations after resuming")
    second.kill()
    second.wait()
    rerun = run_submit(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "locked" not in rerun.stdout
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["global_step"] == 1000
    assert rows()[-1]["preemption_count"] == 2 and rows()[-1]["global_step"] == 1000
    assert trial_containers(client, trial) == []


def test_ctrl_c_stops_the_container(image, tmp_path):
    client = _client()
    args = (*QUICK, "--max_global_steps", "2000", "--budget_scale", "1", *docker_args(tmp_path, "interrupted"))
    trial = trial_dir(tmp_path, "interrupted")
    run = _start_submit(args)
    _wait_for(lambda: (trial / "eval.jsonl").exists(), 180, "the first evaluation")
    run.send_signal(signal.SIGINT)
    try:
        _, stderr = run.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGABRT)
        _, stacks = run.communicate(timeout=30)
        states = [(c.short_id, c.status) for c in client.containers.list(all=True)]
        raise AssertionError(f"submit.py did not end within 90 s of SIGINT; containers {states}; its stacks:\n"
                             f"{stacks[-6000:]}") from None
    assert run.returncode == 130, stderr[-2000:]
    assert "interrupted: run the same command again" in stderr
    _wait_for(lambda: trial_containers(client, trial) == [], 10, "the container to be removed")


MEMORY_HOG = '''
import numpy as np


def make_optimizer(model, hyperparameters, workload):
    hog = np.ones(2 ** 31 // 8 * 3)  # 3 GiB
    raise RuntimeError(f"allocated {hog.nbytes} bytes")


SELF_TUNING_DEFAULTS = {}
'''


def test_the_memory_limit_is_the_containers(image, tmp_path):
    submission = tmp_path / "hog.py"
    submission.write_text(MEMORY_HOG)
    result = run_submit("--workload", "fashion_mnist", "--submission", str(submission), "--tuning_ruleset", "self",
                        "--budget_scale", "1", "--trial_memory_gb", "1.5", *docker_args(tmp_path, "hog"))
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads((trial_dir(tmp_path, "hog", submission="hog") / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "exceeded the per-trial memory limit of 1.5 GB (the container ran out of memory)" in summary["stop_reason"]


def test_an_image_of_other_code_is_refused(image, monkeypatch, tmp_path):
    monkeypatch.setattr(containers, "source_hash", lambda root: "0" * 64)
    runtime = containers.open_runtime(IMAGE, tmp_path / "data", None, None, None, 1)
    with pytest.raises(UserInputError, match="holds other code than this checkout.*docker/build_image.sh"):
        containers.probe(runtime, "pytorch", ["fashion_mnist"])


@pytest.mark.parametrize("flags, message", [
    (("--docker_image", "timetrial:no-such-image"), "no Docker image 'timetrial:no-such-image' on this engine; "
                                                    "build it with: bash docker/build_image.sh"),
    (("--docker_gpus", "all"), "cannot give GPUs to a container"),
    (("--docker_cpus", "4096"), "--docker_cpus 4096 x --max_workers 1 is more than this machine's"),
])
def test_engine_side_refusals_are_one_line_before_anything_is_written(image, tmp_path, flags, message):
    image_flag = () if "--docker_image" in flags else ("--docker_image", IMAGE)
    result = run_submit(*QUICK, "--budget_scale", "1", "--docker", *image_flag, "--experiment_dir", str(tmp_path / "runs"),
                        *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, message", [
    (("--docker", "--executor", "ray"), "--docker runs trials with the local executor, not --executor ray"),
    (("--docker_cpus", "2"), "--docker_cpus only apply with --docker"),
    (("--docker_gpus", "two"), "--docker_gpus must be 'all' or a positive count"),
])
def test_bad_docker_flags_are_refused(tmp_path, flags, message):
    result = run_submit(*QUICK, "--experiment_dir", str(tmp_path / "runs"), *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_no_engine_is_one_line(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = run_submit(*QUICK, "--docker", "--experiment_dir", str(tmp_path / "runs"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach a Docker engine") and result.stderr.count("\n") == 1
    assert "start it" in result.stderr
