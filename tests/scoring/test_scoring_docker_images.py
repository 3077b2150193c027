"""Docker images in scoring: each trial's image (or none) is read, trials of different images (or of
an image and none) are refused unless allowed, and the report shows the images."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scoring import RunRecordError, image_groups, load_runs
from support import run_report

IMAGE_A, IMAGE_B = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32
SHOWN_A = "Docker image sha256:a1a1a1a1a1a1 (timetrial:cpu)"
SHOWN_B = "Docker image sha256:b2b2b2b2b2b2 (timetrial:gpu)"



def container(image_id, name="timetrial:cpu", **docker):
    """meta.json keys of a trial whose worker ran in a container, as the harness writes them."""
    record = {"image_id": image_id, "image": name, "tags": [name], "git_commit": "0123abc", "cpus": 2,
              "memory_gb": 4.0, "gpus": None, **docker}
    return {"docker_image_id": image_id, "docker": record}


def tree(records, images):
    """Entries a (10 s, 11 s) and b (15 s, 16 s) on w_easy, 2 studies of 1 trial on one machine;
    `images[entry]` is the meta.json keys of its container ({}: an old record without them)."""
    for entry, t in (("a", 10.0), ("b", 15.0)):
        for study in range(2):
            records.timetrial(entry, "w_easy", study, 0, records.reaching(t + study), meta_extra=images[entry])
    return records.root


def trial_dir(root, entry):
    return root / "exp" / "w_easy_pytorch" / entry / "study_0" / "trial_0"


@pytest.mark.parametrize(
    "meta, key, name",
    [
        ({}, "none", None),  # an old record: native
        ({"docker_image_id": None, "docker": None}, "none", None),
        (container(IMAGE_A), IMAGE_A, "timetrial:cpu"),
        ({"docker_image_id": IMAGE_A, "docker": {"image": "timetrial:cpu", "tags": [], "cpus": None}}, IMAGE_A,
         "timetrial:cpu"),
        ({"docker_image_id": IMAGE_A}, IMAGE_A, None),
    ],
    ids=["old record", "native", "container", "docker without image_id", "no docker object"],
)
def test_image_key_of_a_record(records, tmp_path, meta, key, name):
    records.timetrial("a", "w_easy", 0, 0, records.reaching(10.0), meta_extra=meta)
    runs = load_runs([tmp_path])
    trial = runs.trials.iloc[0]
    assert trial["docker_image"] == key and runs.evals["docker_image"].iloc[0] == key
    assert (None if pd.isna(trial["docker_image_name"]) else trial["docker_image_name"]) == name


def test_algoperf_layout_is_native_and_an_export_carries_its_image(records, tmp_path):
    plain = records.algoperf("s", "ogbg", 0, 1, records.reaching(
        30.0, target=0.28098, direction="max", metric="validation/mean_average_precision"))
    exported = records.algoperf("s", "mnist_like", 0, 1, records.reaching(30.0))
    target = {"workload": "mnist_like", "target_metric_name": "error_rate", "metric_direction": "min",
              "validation_target_value": 0.1, **container(IMAGE_A)}
    (exported / "timetrial_target.json").write_text(json.dumps(target))
    older = records.algoperf("s", "mnist_like", 1, 1, records.reaching(30.0))  # an export from before the key
    target = {k: v for k, v in target.items() if not k.startswith("docker")}
    (older / "timetrial_target.json").write_text(json.dumps(target))
    trials = load_runs([tmp_path]).trials
    trials = trials.set_index(trials["trial_dir"].astype(str))
    assert trials.loc[str(plain), "docker_image"] == "none"
    assert trials.loc[str(exported), "docker_image"] == IMAGE_A
    assert trials.loc[str(exported), "docker_image_name"] == "timetrial:cpu"
    assert trials.loc[str(older), "docker_image"] == "none"


@pytest.mark.parametrize(
    "meta, problem",
    [
        ({"docker_image_id": 42}, "docker_image_id must be null (no container) or a Docker image ID such as "
         "'sha256:...', got 42"),
        ({"docker_image_id": ""}, "docker_image_id must be null (no container) or a Docker image ID"),
        ({"docker_image_id": [IMAGE_A]}, f"docker_image_id must be null (no container) or a Docker image ID such as "
         f"'sha256:...', got ['{IMAGE_A}']"),
        ({"docker_image_id": IMAGE_A, "docker": "timetrial:cpu"},
         "docker must be null (no container) or an object, got 'timetrial:cpu'"),
        ({"docker_image_id": None, "docker": container(IMAGE_A)["docker"]},
         "docker describes a container but docker_image_id is null"),
        ({"docker_image_id": IMAGE_A, "docker": container(IMAGE_B)["docker"]},
         f"docker.image_id is '{IMAGE_B}' but docker_image_id is '{IMAGE_A}'"),
        (container(IMAGE_A, name=3), "docker.image must be null or an image name such as 'timetrial:cpu', got 3"),
    ],
    ids=["number", "empty", "list", "docker string", "id null", "ids differ", "name number"],
)
def test_bad_docker_fields_name_the_file(records, tmp_path, meta, problem):
    d = records.timetrial("a", "w_easy", 0, 0, records.reaching(10.0), meta_extra=meta)
    with pytest.raises(RunRecordError) as caught:
        load_runs([tmp_path])
    assert caught.value.path == str(d / "meta.json") and problem in caught.value.problem


def test_a_bad_image_in_an_export_names_its_target_file(records, tmp_path):
    d = records.algoperf("s", "mnist_like", 0, 1, records.reaching(30.0))
    target = {"target_metric_name": "error_rate", "metric_direction": "min", "validation_target_value": 0.1,
              "docker_image_id": 7}
    (d / "timetrial_target.json").write_text(json.dumps(target))
    with pytest.raises(RunRecordError, match="docker_image_id must be null") as caught:
        load_runs([tmp_path])
    assert caught.value.path == str(d / "timetrial_target.json")


@pytest.mark.parametrize(
    "b_image, shown",
    [
        (container(IMAGE_B, "timetrial:gpu"), SHOWN_B),
        ({}, "no container"),  # an old record: native
        ({"docker_image_id": None, "docker": None}, "no container"),
    ],
    ids=["other image", "old record", "native"],
)
def test_different_images_are_refused_unless_allowed(records, tmp_path, capsys, b_image, shown):
    root = tree(records, {"a": container(IMAGE_A), "b": b_image})
    code, _, err = run_report([root, "--out", tmp_path / "r", "--bootstrap", "10"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(
        "python -m scoring.report: error: run records come from 2 different Docker images (a trial run without a "
        "container counts as one), so their times were measured under different software or resource limits: "
    )
    assert f"{SHOWN_A}: 2 trials of a under {root}, e.g. {trial_dir(root, 'a')}" in err
    assert f"{shown}: 2 trials of b under {root}, e.g. {trial_dir(root, 'b')}" in err
    assert err.rstrip().endswith("(pass --allow_mixed_images to score them together)")
    assert not (tmp_path / "r").exists()

    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10", "--allow_mixed_images"], capsys)
    assert code == 0, err
    assert "warning: run records come from 2 different Docker images" in err
    md = (out / "leaderboard.md").read_text()
    assert "> - run records come from 2 different Docker images" in md
    line = next(line for line in md.splitlines() if line.startswith("- **Docker image:**"))
    assert f"{SHOWN_A}: 2 trials" in line and f"{shown}: 2 trials" in line
    html = (out / "leaderboard.html").read_text()
    assert "<dt>Docker image</dt><dd>" in html and "run records come from 2 different Docker images" in html
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["docker_image"]) == {IMAGE_A, IMAGE_B if shown == SHOWN_B else "none"}
    scores = pd.read_csv(out / "scores.csv").set_index("entry")["score"]
    assert scores["a"] == pytest.approx(1.0) and scores["b"] < 1.0


def test_one_image_scores_and_the_report_shows_it(records, tmp_path, capsys):
    root = tree(records, {"a": container(IMAGE_A), "b": container(IMAGE_A)})
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert "Docker image" not in err
    md = (out / "leaderboard.md").read_text()
    assert f"- **Docker image:** {SHOWN_A}: 4 trials\n" in md
    assert "different Docker images" not in md
    html = (out / "leaderboard.html").read_text()
    assert f"<dt>Docker image</dt><dd>{SHOWN_A}: 4 trials</dd>" in html
    assert set(pd.read_csv(out / "trials.csv")["docker_image"]) == {IMAGE_A}


def test_old_records_without_the_key_score_as_native(records, tmp_path, capsys):
    """Records from before containers (no docker_image_id, no docker) score together with records
    that say 'no container', as one image key."""
    root = tree(records, {"a": {}, "b": {"docker_image_id": None, "docker": None}})
    out = tmp_path / "r"
    code, _, err = run_report([root, "--out", out, "--bootstrap", "10"], capsys)
    assert code == 0, err
    groups = image_groups(load_runs([root]))
    assert groups["docker_image"].tolist() == ["none"] and groups["trials"].tolist() == [4]
    md = (out / "leaderboard.md").read_text()
    assert "- **Docker image:** no container: 4 trials\n" in md
    assert "<dt>Docker image</dt><dd>no container: 4 trials</dd>" in (out / "leaderboard.html").read_text()
