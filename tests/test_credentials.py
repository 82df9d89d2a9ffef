"""Credentials come from the environment only, and go nowhere else.

ingest (from s3:// on an S3 server that knows only sentinel keys) -> validate -> prepare -> train
(tiny, tracked on the MLflow server) -> register, with sentinel AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment;
then no sentinel (nor the basic-auth header made of the MLflow pair) appears in any log line (the
captured output, the project's logs at the level the pipeline runs at and facectx's at DEBUG, the
MLflow server's log file), any MLflow param, tag or artifact of the runs and the registered
model, the DVC config files, or the compiled Kubeflow pipeline. One exception, by MLflow's design:
the runs' `mlflow.user` tag is the MLflow user name (who made the run; not a secret), and must be.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import uuid
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, WeedServer, make_source, tiny_training_params
from facectx import tracking
from facectx.steps.ingest import ingest_step
from facectx.steps.prepare import prepare_step
from facectx.steps.register import register_step
from facectx.steps.train import stage_dirs, train_stage_step
from facectx.steps.validate import validate_step

BUCKET, PREFIX = "sentinel-photos", "lfw"


@pytest.fixture
def sentinels() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "AWS_ACCESS_KEY_ID": f"SENTINELKEY{tag[:12].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"sentinel-secret-{tag}",
        "MLFLOW_TRACKING_USERNAME": f"sentinel-user-{tag[:12]}",
        "MLFLOW_TRACKING_PASSWORD": f"sentinel-password-{tag}",
    }


@pytest.fixture
def sentinel_s3(sentinels, tmp_path):
    """A second S3 server (its own ports) whose only identity is the sentinel key pair."""
    server = WeedServer(tmp_path / "weed")
    server.env.update(
        AWS_ACCESS_KEY_ID=sentinels["AWS_ACCESS_KEY_ID"], AWS_SECRET_ACCESS_KEY=sentinels["AWS_SECRET_ACCESS_KEY"]
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


def without_user(tags: dict[str, str], user: str) -> dict[str, str]:
    """The tags but `mlflow.user`, which must be the MLflow user name: MLflow records who made a
    run (the tracking user name, by its design) -- an identity, like a commit's author, not a
    secret. It proves the name was read from the environment; anywhere else it counts as a leak."""
    tags = dict(tags)
    assert tags.pop("mlflow.user", user) == user  # (runs made by client.create_run have none)
    return tags


def _texts_of_files(folder: Path, where: str) -> list[tuple[str, bytes]]:
    return [
        (f"{where}/{path.relative_to(folder)}", path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def test_credentials_only_from_the_environment(
    sentinels, sentinel_s3, tracking_server, lfw_dir, params, tmp_path, monkeypatch, capfd, caplog
):
    for name, value in {**sentinel_s3.env, **sentinels}.items():
        monkeypatch.setenv(name, value)
    pipeline_run = f"credentials-{uuid.uuid4().hex[:12]}"  # this test's own pipeline run on the server
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="facectx")
    server_log_start = tracking_server.log_file.stat().st_size

    # The photos, in the sentinel-keyed bucket; a client with other keys is refused.
    source = make_source(lfw_dir, tmp_path / "source", train_people=8, test_people=2, max_photos=2)
    s3 = boto3.client("s3")  # from the environment: the sentinel keys
    s3.create_bucket(Bucket=BUCKET)
    for photo in sorted(source.rglob("*.jpg")):
        s3.upload_file(str(photo), BUCKET, f"{PREFIX}/images/{photo.relative_to(source).as_posix()}")
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        s3.upload_file(str(source.parent / name), BUCKET, f"{PREFIX}/{name}")
    stranger = boto3.client("s3", aws_access_key_id="facectx-test", aws_secret_access_key="facectx-test-secret")
    with pytest.raises(botocore.exceptions.ClientError):
        stranger.list_objects_v2(Bucket=BUCKET)

    # ingest -> validate -> prepare -> train (one tiny stage) -> register, tracked on the server.
    name = f"facectx-credentials-{uuid.uuid4().hex[:8]}"
    tiny = tiny_training_params(params, max_train_rows=4, val_rows=2, grid_rows=1)
    tiny = dataclasses.replace(
        tiny,
        losses=dataclasses.replace(tiny.losses, identity=False, perceptual=False),
        validate=dataclasses.replace(tiny.validate, workers=1, min_valid_fraction=0.5),
        prepare=dataclasses.replace(
            tiny.prepare, workers=1, split=dataclasses.replace(tiny.prepare.split, val_fraction=0.25)
        ),
        registry=dataclasses.replace(tiny.registry, model_name=name),
    )
    raw, validated, prepared, models = (tmp_path / d for d in ("raw", "validated", "prepared", "models"))
    assert ingest_step(tiny, raw, f"s3://{BUCKET}/{PREFIX}/images")["new"] > 0
    validate_step(tiny, raw, validated)
    prepare_step(tiny, raw, validated, prepared)
    train_stage_step(tiny, 8, prepared, pipeline_run=pipeline_run, **stage_dirs(tiny, 8, models))
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"methods": {"cascade": {"fd": 1.0, "identity_match": 0.5}}}))
    registered = register_step(
        tiny, models / "stage_8" / "checkpoint", metrics_file, prepared_dir=prepared, raw_dir=raw
    )
    pipeline_yaml = tmp_path / "pipeline.yaml"
    from pipelines.compile import compile_pipeline

    compile_pipeline(REPO / "params.yaml", pipeline_yaml)

    # Everything that could hold a credential: (where, bytes).
    found: list[tuple[str, bytes]] = []
    out, err = capfd.readouterr()
    found += [("stdout", out.encode()), ("stderr", err.encode())]
    found += [(f"log {r.name}:{r.lineno}", r.getMessage().encode()) for r in caplog.records]
    with open(tracking_server.log_file, "rb") as server_log:
        server_log.seek(server_log_start)
        found.append(("mlflow server log", server_log.read()))
    log_files = [p for p in tmp_path.rglob("*.log") if p.is_file()]  # the S3 server's among them
    assert log_files
    found += [(f"log file {p.relative_to(tmp_path)}", p.read_bytes()) for p in log_files]

    client = MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    [parent] = client.search_runs([experiment], filter_string=f"tags.`{tracking.KEY_TAG}` = '{pipeline_run}'")
    runs, frontier = [parent, client.get_run(registered["run_id"])], [parent.info.run_id]
    while frontier:  # the pipeline run's whole tree: model run, stage run
        children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{frontier.pop()}'")
        runs += children
        frontier += [child.info.run_id for child in children]
    assert {run.data.tags.get("facectx.stage") for run in runs} >= {"cascade/stage_8", "register"}
    user = sentinels["MLFLOW_TRACKING_USERNAME"]
    assert any(run.data.tags.get("mlflow.user") == user for run in runs)  # the MLflow pair came from the environment
    for run in runs:
        tags = without_user(run.data.tags, user)
        found.append((f"run {run.info.run_id} params+tags", json.dumps([run.data.params, tags]).encode()))
        download = tmp_path / "downloaded" / run.info.run_id
        if client.list_artifacts(run.info.run_id):
            client.download_artifacts(run.info.run_id, "", str(download))
            found += _texts_of_files(download, f"run {run.info.run_id} artifact")
    model_id = registered["model_uri"].rsplit("/", 1)[-1]
    logged_model = client.get_logged_model(model_id)
    tags = without_user(logged_model.tags, user)
    found.append((f"logged model {model_id}", json.dumps([logged_model.params, tags]).encode()))
    import mlflow.artifacts

    model_files = Path(mlflow.artifacts.download_artifacts(registered["model_uri"], dst_path=str(tmp_path / "model")))
    found += _texts_of_files(model_files, "model artifact")
    assert any(where.endswith("model.safetensors") for where, _ in found)  # the whole model came down
    version = client.get_model_version(name, str(registered["version"]))
    found.append(("model version", json.dumps([version.tags, version.source, version.description or ""]).encode()))

    for config in (REPO / ".dvc" / "config", REPO / ".dvc" / "config.local"):
        if config.is_file():
            found.append((str(config.relative_to(REPO)), config.read_bytes()))
    found.append(("compiled pipeline", pipeline_yaml.read_bytes()))

    basic_auth = base64.b64encode(f"{user}:{sentinels['MLFLOW_TRACKING_PASSWORD']}".encode())
    patterns = {**{name: value.encode() for name, value in sentinels.items()}, "basic-auth header": basic_auth}
    hits = [(where, name) for where, data in found for name, pattern in patterns.items() if pattern in data]
    assert hits == []
    assert len(found) > 20 and any(where.startswith("run ") and "artifact" in where for where, _ in found)
