"""Trials in Docker containers (`submit.py --docker`), through the Docker SDK for Python.

The host plans the run as without `--docker`; each trial's worker (`python -m harness.worker`) then
runs in a container of its own, made from an image of TimeTrial (`docker/`), with

- the code baked into the image (never mounted): before planning, a probe container reports the
  image's code hash (`code_identity.source_hash`), which must be this checkout's, and the software
  and hardware the trials will record (the container's, not the host's);
- the data directory mounted read-only, and the run records read-write, at their host paths, so
  `meta.json` means the same inside and out; a submission or workload given by a path outside the
  image's code is mounted read-only at its path (its content hash is checked as always);
- no network (`network_mode="none"`), a read-only root file system with a private `/tmp`, the
  calling user's uid and gid (what a trial writes is the caller's), the CPU set, memory limit and
  GPUs the flags give, and labels naming the trial and the `submit.py` process that owns it.

A trial's container ends with its trial. The owner touches a heartbeat file in the trial directory
while it supervises it, and the worker ends itself when the file goes stale (`harness/worker.py`),
so even a `submit.py` killed by SIGKILL leaves no container running for long; containers whose
owner is dead are killed before a new run plans (they would hold their trials' locks). Ctrl-C and
the wall-clock limit kill the container at once; the memory limit is the container's own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from harness.capped_log import CappedLog
from harness.code_identity import source_hash
from harness.discovery import REPO_ROOT
from harness.errors import UserInputError
from harness.executors import LOG_TAIL_CHARS
from harness.experiment import write_failure
from harness.records import read_json
from harness.worker import HEARTBEAT_VARIABLE, HOST_REPO_VARIABLE, LOCKED_EXIT_STATUS

IMAGE_REPO_ROOT = "/opt/timetrial"  # where docker/Dockerfile puts the code
IMAGE_PYTHON = "/opt/venv/bin/python"
BUILD_HINT = "build it with: bash docker/build_image.sh"
LABEL_TRIAL, LABEL_OWNER = "org.timetrial.trial", "org.timetrial.owner"
HEARTBEAT_FILE = ".heartbeat"
HEARTBEAT_EVERY_SEC = 1.0
KILLED_EXIT_STATUS = 137  # 128 + SIGKILL: `docker kill`, or a worker whose owner's heartbeat stopped


def _owner() -> str:
    """This process, as the owner label names it: host, pid and start time (a reused pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


def _owner_alive(owner: str) -> bool:
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's: not ours to judge
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (psutil.Error, ValueError):
        return False


def connect():
    """A client of the local Docker engine (DOCKER_HOST and the like are honoured), or one error line."""
    try:
        import docker
    except ImportError:
        raise UserInputError("--docker needs the Docker SDK for Python: pip install 'timetrial[docker]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise UserInputError(f"cannot reach a Docker engine ({exc}); start it (sudo systemctl start docker, "
                             "or sudo dockerd &) or run without --docker") from None
    return client


def _mount(source: Path, read_only: bool):
    import docker

    return docker.types.Mount(str(source), str(source), type="bind", read_only=read_only)


@dataclass
class Runtime:
    """The image and the limits every container of a run gets; made by `open_runtime`."""

    client: object
    image: object  # docker.models.images.Image
    image_name: str
    data_dir: Path
    cpus: int | None
    memory_gb: float | None
    gpus: str | None  # "all" or a count; None: no GPU
    code_paths: list[Path] = field(default_factory=list)  # submission/workload code outside the image, mounted
    probe: dict = field(default_factory=dict)  # the image's source_hash, software and hardware per workload

    @property
    def record(self) -> dict:
        """meta.json's `docker`: the image's ID (its content digest), the name it was run by, its tags and
        the git commit it was built from, and the limits each container had."""
        return {"image_id": self.image.id, "image": self.image_name, "tags": sorted(self.image.tags),
                "git_commit": (self.image.labels or {}).get("org.timetrial.git_commit"),
                "cpus": self.cpus, "memory_gb": self.memory_gb, "gpus": self.gpus}

    def container_facts(self, workload_ref: str) -> dict:
        """What `Experiment.container` holds for a workload: the image's hardware and software, and `record`."""
        return {"hardware": self.probe["hardware"][workload_ref], "software": self.probe["software"],
                "docker": self.record}

    @property
    def first_cpuset(self) -> str | None:
        """The CPU set of a one-off container (probe, calibration): as many CPUs as a trial's."""
        return CpuSets(self.cpus, 1).take()

    def _device_requests(self) -> list:
        import docker

        if self.gpus is None:
            return []
        count = -1 if self.gpus == "all" else int(self.gpus)
        return [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]

    def start(self, command: list[str], mounts: list, labels: dict, environment: dict,
              cpuset: str | None = None, tty: bool = False):
        """A detached container of the image running `command` (a module of the image's Python)."""
        import docker

        options = dict(
            entrypoint=[IMAGE_PYTHON], command=command, detach=True, network_mode="none",
            user=f"{os.getuid()}:{os.getgid()}", read_only=True, tmpfs={"/tmp": "rw,exec"},
            shm_size="1g", working_dir=IMAGE_REPO_ROOT, tty=tty,
            mounts=[*mounts, *(_mount(p, True) for p in self.code_paths)],
            labels={LABEL_OWNER: _owner(), **labels},
            environment={HOST_REPO_VARIABLE: str(REPO_ROOT), **environment},
            device_requests=self._device_requests(),
        )
        if cpuset is not None:
            options["cpuset_cpus"] = cpuset
        if self.memory_gb is not None:
            options["mem_limit"] = options["memswap_limit"] = int(self.memory_gb * 2**30)
        try:
            return self.client.containers.run(self.image.id, **options)
        except docker.errors.APIError as exc:
            text = str(exc)
            if self.gpus is not None and ("device driver" in text or "nvidia" in text.lower()):
                raise UserInputError(f"the Docker engine cannot give GPUs to a container ({exc.explanation or text}): "
                                     "install the NVIDIA Container Toolkit, or run without --docker_gpus") from None
            raise UserInputError(f"the Docker engine refused to start a container of {self.image_name}: "
                                 f"{exc.explanation or text}") from None

    def run_to_end(self, module_args: list[str], mounts: list, environment: dict | None = None) -> str:
        """Run `python -m <module_args>` in a container; its stderr streams here, its stdout is returned.

        A nonzero exit is one error line naming the command and the container's last words."""
        container = self.start(["-m", *module_args], mounts, {}, environment or {}, self.first_cpuset)
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=False, stderr=True):
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
            status = container.wait()["StatusCode"]
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        finally:
            _remove(container)
        if status != 0:
            raise UserInputError(f"`python -m {' '.join(module_args)}` failed in the container (exit status {status})")
        return stdout


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def open_runtime(image_name: str, data_dir: Path, cpus: int | None, memory_gb: float | None,
                 gpus: str | None, max_workers: int) -> Runtime:
    """Connect, find the image, kill containers whose owner died, and check the image's code is this checkout's."""
    import docker

    client = connect()
    try:
        image = client.images.get(image_name)
    except docker.errors.ImageNotFound:
        raise UserInputError(f"no Docker image {image_name!r} on this engine; {BUILD_HINT}"
                             + (f" --tag {image_name}" if image_name != "timetrial:cpu" else "")) from None
    except docker.errors.APIError as exc:
        raise UserInputError(f"cannot read Docker image {image_name!r}: {exc.explanation or exc}") from None
    CpuSets(cpus, max_workers)  # refuses more CPUs than there are, before anything is written
    data_dir = data_dir.resolve()
    try:  # mounted into every container, so it must exist
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--data_dir {data_dir} is not a directory that can be made: {exc.strerror or exc}") from None
    runtime = Runtime(client, image, image_name, data_dir, cpus, memory_gb, gpus)
    kill_orphans(client)
    return runtime


def kill_orphans(client) -> None:
    """Remove this host's containers whose owning `submit.py` is gone (killed ones that still run,
    and those that ended themselves), saying which trials they ran."""
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if not _owner_alive(container.labels[LABEL_OWNER]):
            _remove(container)
            print(f"removed container {container.short_id} of a killed submit.py "
                  f"({container.labels.get(LABEL_TRIAL, 'no trial')})", file=sys.stderr)


def probe(runtime: Runtime, framework: str, workload_refs: list[str]) -> dict:
    """The image's code hash, software, and hardware per workload (as a trial there records them);
    refuses an image built from other code than this checkout's."""
    output = runtime.run_to_end(
        ["harness.environment", "--framework", framework, "--data_dir", str(runtime.data_dir),
         "--workload", ",".join(workload_refs)], [_mount(runtime.data_dir, True)])
    try:
        facts = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UserInputError(f"the image {runtime.image_name} did not describe itself: {output[-300:]!r}") from None
    here = source_hash(REPO_ROOT)
    if facts.get("source_hash") != here:
        raise UserInputError(f"the image {runtime.image_name} holds other code than this checkout (code hash "
                             f"{str(facts.get('source_hash'))[:12]}, here {here[:12]}); rebuild it: "
                             f"bash docker/build_image.sh --tag {runtime.image_name}")
    runtime.probe = facts
    return facts


def calibrate(runtime: Runtime, workload_refs: list[str], profile_dir: Path) -> dict:
    """The image's machine profile with these workloads in it, measured in a container when missing
    (`python -m harness.calibrate --ensure`, which prints the profile's path last)."""
    profile_dir = profile_dir.resolve()
    profile_dir.mkdir(parents=True, exist_ok=True)
    output = runtime.run_to_end(
        ["harness.calibrate", "--ensure", "--data_dir", str(runtime.data_dir), "--workload", ",".join(workload_refs)],
        [_mount(runtime.data_dir, True), _mount(profile_dir, False)],
        {"TIMETRIAL_PROFILE_DIR": str(profile_dir)})
    path = Path(output.strip().splitlines()[-1])
    profile = read_json(path) if path.parent == profile_dir else {}
    if not profile:
        raise UserInputError(f"calibration in the container wrote no machine profile ({output[-300:]!r})")
    return profile


class CpuSets:
    """Disjoint CPU sets of `cpus` CPUs each for the trials that run at once (None: no CPU limit)."""

    def __init__(self, cpus: int | None, max_workers: int) -> None:
        available = sorted(os.sched_getaffinity(0))
        if cpus is not None and cpus * max_workers > len(available):
            raise UserInputError(f"--docker_cpus {cpus} x --max_workers {max_workers} is more than this machine's "
                                 f"{len(available)} CPUs: each trial running at once gets CPUs of its own")
        self._free = ([",".join(map(str, available[i * cpus:(i + 1) * cpus])) for i in range(max_workers)]
                      if cpus is not None else None)

    def take(self) -> str | None:
        return self._free.pop(0) if self._free is not None else None

    def give_back(self, cpuset: str | None) -> None:
        if cpuset is not None:
            self._free.append(cpuset)


class ContainerTrial:
    """One trial's worker in a container of its own; `poll` and `kill` as `executors.TrialProcess`."""

    def __init__(self, runtime: Runtime, cpusets: CpuSets, records_root: Path, trial_dir: Path,
                 wall_sec: float | None, stream_output: bool) -> None:
        self.trial_dir, self.wall_sec, self._cpusets, self._memory_gb = trial_dir, wall_sec, cpusets, runtime.memory_gb
        self.cpuset = cpusets.take()
        self._heartbeat = trial_dir.resolve() / HEARTBEAT_FILE
        self._beat()
        tty = stream_output and sys.stdout.isatty()  # progress bars need a terminal, of this terminal's size
        try:
            self.container = runtime.start(
                ["-m", "harness.worker", str(trial_dir.resolve())],
                [_mount(runtime.data_dir, True), _mount(records_root.resolve(), False)],
                {LABEL_TRIAL: str(trial_dir.resolve())}, {HEARTBEAT_VARIABLE: str(self._heartbeat)},
                self.cpuset, tty=tty)
            if tty:
                columns, lines = shutil.get_terminal_size()
                self.container.resize(height=lines, width=columns)
        except BaseException:
            self._release()
            raise
        self.started = time.monotonic()
        self._exit: dict | None = None  # the engine's answer to `wait`, once the container has stopped
        threading.Thread(target=self._wait, name=f"wait {self.container.short_id}", daemon=True).start()
        self._log = self._pipe_output(stream_output)

    def _wait(self) -> None:
        try:
            self._exit = self.container.wait()
        except Exception as exc:  # noqa: BLE001 - the engine went away: the trial's end is unknown
            self._exit = {"StatusCode": None, "Error": str(exc)}

    def _beat(self) -> None:
        self._heartbeat.touch()
        self._beaten = time.monotonic()

    def _pipe_output(self, stream_output: bool) -> CappedLog | None:
        """The container's output, on this terminal (one trial) or into the trial's capped log.txt."""
        read_end, write_end = os.pipe()
        reader = os.fdopen(read_end, "rb")

        def copy() -> None:
            with os.fdopen(write_end, "wb", buffering=0) as pipe:
                for chunk in self.container.logs(stream=True, follow=True):
                    pipe.write(chunk)

        threading.Thread(target=copy, name=f"container {self.container.short_id}", daemon=True).start()
        if not stream_output:
            return CappedLog(self.trial_dir / "log.txt", reader)

        def to_terminal() -> None:
            for chunk in iter(lambda: reader.read1(65536), b""):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

        self._terminal = threading.Thread(target=to_terminal, daemon=True)
        self._terminal.start()
        return None

    def kill(self) -> None:
        try:
            self.container.kill()  # SIGKILL at once; the removal may wait on the engine
        except Exception:  # noqa: BLE001 - it ended meanwhile
            pass
        _remove(self.container)
        self._release()

    def _release(self) -> None:
        if self.cpuset is not None:
            self._cpusets.give_back(self.cpuset)
            self.cpuset = None
        self._heartbeat.unlink(missing_ok=True)

    def _finish(self, outcome: str) -> str:
        if self._log is not None:
            self._log.close()
        else:
            self._terminal.join(timeout=5)
        self._release()
        return outcome

    def _log_tail(self) -> str:
        return self._log.tail(LOG_TAIL_CHARS) if self._log is not None else "(output above)"

    def poll(self) -> str | None:
        """None while the trial runs; then 'done', 'failed', 'interrupted' or 'locked'."""
        if time.monotonic() - self._beaten >= HEARTBEAT_EVERY_SEC:
            self._beat()
        if self._exit is None:
            if self.wall_sec is not None and time.monotonic() - self.started > self.wall_sec:
                self.kill()
                reason = f"exceeded the per-trial wall-clock limit of {self.wall_sec:g} s"
                write_failure(self.trial_dir, reason, reason)
                return self._finish("failed")
            return None
        code = self._exit["StatusCode"]
        try:
            self.container.reload()
            out_of_memory = self.container.attrs["State"].get("OOMKilled", False)
        except Exception:  # noqa: BLE001 - removed meanwhile
            out_of_memory = False
        _remove(self.container)
        if code == LOCKED_EXIT_STATUS:
            return self._finish("locked")
        if out_of_memory:
            reason = f"exceeded the per-trial memory limit of {self._memory_gb:g} GB (the container ran out of memory)"
            write_failure(self.trial_dir, reason, self._log_tail())
            return self._finish("failed")
        status = read_json(self.trial_dir / "summary.json").get("status")
        if code in (0, 1) and status != "running":
            return self._finish("failed" if status == "failed" else "done")
        if code == KILLED_EXIT_STATUS:
            return self._finish("interrupted")
        how = f"exited with status {code}" if code is not None else f"was lost ({self._exit.get('Error')})"
        write_failure(self.trial_dir, f"the worker container {how}", self._log_tail())
        return self._finish("failed")


def trial_starter(runtime: Runtime, records_root: Path, max_workers: int,
                  wall_sec: float | None) -> Callable[[Path, bool], ContainerTrial]:
    """What `executors.run_local` calls to start a trial: a container with a CPU set of its own that
    sees the run records under `records_root` (`<experiment_dir>/<experiment_name>`)."""
    cpusets = CpuSets(runtime.cpus, max_workers)
    return lambda trial_dir, stream: ContainerTrial(runtime, cpusets, records_root, trial_dir, wall_sec, stream)
