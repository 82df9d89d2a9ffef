"""Tracking on a real MLflow server (runs in PostgreSQL, artifacts in an S3 bucket; see the
`tracking_server` fixture), and what happens when it fails: nothing is lost.

- A tiny cascade is trained, registered, promoted and served from the server; its runs are rows in
  PostgreSQL and its artifacts objects in the bucket.
- Server down when a stage starts: a one-line error naming the URI, before anything is trained.
- Server killed during a stage: training finishes; what it logged from then on is kept in a
  spool folder (named in a warning) and sent to the same run by the next stage, once the server
  is back.
- PostgreSQL restarted during a stage: the run goes on; PostgreSQL down for a while: the stage
  spools and sends everything when it ends. Every metric step ends up in the database once.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import sys
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import s3_client, tiny_training_params
from facectx import layout, registry, tracking
from facectx.steps.register import promote_step, register_step
from facectx.steps.train import stage_dirs, train_stage_step
from servers import refusing_port

GATES = ("fd:lower", "identity_match:higher")


def fast_tiny(params, **train_changes):
    """The tiny cascade without the identity and perceptual networks (only the plumbing matters here)."""
    tiny = tiny_training_params(params, **{"max_train_rows": 4, "val_rows": 2, "grid_rows": 1, **train_changes})
    return dataclasses.replace(tiny, losses=dataclasses.replace(tiny.losses, identity=False, perceptual=False))


def train(params, stage, prepared, models, pipeline_run=None):
    return train_stage_step(params, stage, prepared, pipeline_run=pipeline_run, **stage_dirs(params, stage, models))


@pytest.fixture
def own_pipeline(monkeypatch, tmp_path):
    """A pipeline run of this test's own on the shared server (its key); spool folders under tmp_path/runs."""
    monkeypatch.chdir(tmp_path)
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brief_http(monkeypatch):
    """One quick retry: a test that stops the server must not wait out MLflow's back-off."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


def stage_runs(client, key: str) -> tuple[str, dict]:
    """(experiment id, {stage name: run}) of the pipeline run `key`: pipeline -> model -> stages."""
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    [parent] = client.search_runs([experiment], filter_string=f"tags.`{tracking.KEY_TAG}` = '{key}'")
    under = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    stages = [
        run
        for model in under
        for run in client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{model.info.run_id}'")
    ]
    return experiment, {run.data.tags["facectx.stage"]: run for run in stages}


def aliases(client, name) -> dict[str, int]:
    return {alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()}


def history(client, run_id, keys) -> set[tuple[str, int, float]]:
    return {(key, m.step, m.value) for key in keys for m in client.get_metric_history(run_id, key)}


def test_trained_model_is_tracked_registered_promoted_and_served_through_the_server(
    tracking_server, own_pipeline, prepared_data, params, lfw_dir, tmp_path
):
    import mlflow.pyfunc

    name = f"facectx-server-{uuid.uuid4().hex[:8]}"
    tiny = fast_tiny(params)
    tiny = dataclasses.replace(tiny, registry=dataclasses.replace(tiny.registry, model_name=name, gate_metrics=GATES))
    models = tmp_path / "models"
    for stage in tiny.train.stages:  # the whole chain: the served frame is the last stage's (128 px)
        train(tiny, stage, prepared_data, models, own_pipeline)
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"methods": {"cascade": {"fd": 10.0, "identity_match": 0.5}}}))
    registered = register_step(
        tiny,
        layout.final_checkpoint(models, tiny.train.stages),
        metrics_file,
        prepared_dir=prepared_data,
        raw_dir=prepared_data.parent / "raw",
    )
    client = MlflowClient(tracking_server.url)
    assert aliases(client, name) == {"challenger": registered["version"]}
    decision = promote_step(tiny, expected_version=registered["version"])
    assert decision["promoted"]
    assert aliases(client, name) == {"challenger": 1, "champion": 1}

    # Served from the registry: the champion's files come from the bucket through the server.
    path = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        sys.path[:] = path  # the model's code_paths (a copy of facectx) must not shadow the source
    photo = lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    out = model.predict(pd.DataFrame({"image": [base64.b64encode(photo.read_bytes()).decode("ascii")]}))
    png = base64.b64decode(out["image"][0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    frame = np.asarray(Image.open(io.BytesIO(png)))
    assert frame.shape == (params.crop.size_px, params.crop.size_px, 3) and frame.dtype == np.uint8

    # The artifacts are objects in the bucket: a stage's sample grid and the registered model's files.
    experiment, runs = stage_runs(client, own_pipeline)
    assert sorted(runs) == sorted(f"cascade/stage_{s}" for s in tiny.train.stages)
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    stage_128 = runs["cascade/stage_128"]
    s3 = s3_client(tracking_server.s3_env)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=tracking_server.bucket)
        for o in page.get("Contents", [])
    ]
    assert f"{experiment}/{stage_128.info.run_id}/artifacts/samples/stage_128_epoch_000.png" in keys
    model_id = registered["model_uri"].rsplit("/", 1)[-1]
    model_files = [k for k in keys if f"/{model_id}/artifacts/" in k]
    assert any(k.endswith("/MLmodel") for k in model_files) and any(
        k.endswith("model.safetensors") for k in model_files
    )

    # The runs are rows in PostgreSQL: the stage runs with their metric steps, the model version.
    query = tracking_server.postgres.query
    assert query("SELECT status FROM runs WHERE run_uuid = %s", (stage_128.info.run_id,)) == [("FINISHED",)]
    [(rows,)] = query("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss_rec'", (stage_128.info.run_id,))
    assert rows == len(client.get_metric_history(stage_128.info.run_id, "loss_rec")) >= 1
    assert query("SELECT version, run_id FROM model_versions WHERE name = %s", (name,)) == [(1, registered["run_id"])]
    assert query("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias", (name,)) == [
        ("challenger", 1),
        ("champion", 1),
    ]


def test_stage_with_the_server_down_stops_before_training(prepared_data, params, tmp_path, monkeypatch, own_pipeline):
    """A server that is down looks like a port nobody answers on: a clear error at once, naming
    the URI (without the password in it), and no checkpoint; the registry says the same."""
    # The port refuses for as long as the block runs (servers.refusing_port): no server that another
    # test starts meanwhile can answer on it.
    with refusing_port() as port:
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.replace("http://", "http://someone:hunter2@"))
        models = tmp_path / "models"
        slept = []  # every back-off asked for, instead of waiting it out (no clock in the assertion)
        monkeypatch.setattr(time, "sleep", slept.append)
        with pytest.raises(tracking.TrackingUnavailable) as caught:
            train(fast_tiny(params), 8, prepared_data, models, own_pipeline)
        assert sum(slept) < 20, slept  # not MLflow's minutes of retries
        message = str(caught.value)
        assert f"MLflow tracking server {uri} is not reachable" in message and "\n" not in message
        assert "hunter2" not in message and "nothing was run" in message
        assert not models.exists()
        with pytest.raises(tracking.TrackingUnavailable, match=f"{uri} is not reachable"):
            registry.promote("facectx-unreachable", GATES)
        assert sum(slept) < 20, slept


class MetricCalls:
    """Wraps Tracker.log_metrics: records every call ({run id: {(key, step, value)}}), and runs
    `before[n]` / `after[n]` around the n-th call."""

    def __init__(self, monkeypatch, before=None, after=None):
        self.logged: dict[str, set[tuple[str, int, float]]] = {}
        self.trackers, self.calls, self.http_timeouts = [], 0, set()
        self.before, self.after = before or {}, after or {}
        original = tracking.Tracker.log_metrics

        def log_metrics(tracker, metrics, step):
            import os

            self.calls += 1
            self.trackers.append(tracker)
            self.http_timeouts.add(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT"))
            self.before.get(self.calls, lambda: None)()
            original(tracker, metrics, step)
            self.logged.setdefault(tracker.run_id, set()).update((k, step, float(v)) for k, v in metrics.items())
            self.after.get(self.calls, lambda: None)()

        monkeypatch.setattr(tracking.Tracker, "log_metrics", log_metrics)


def test_server_killed_mid_stage_loses_nothing(
    tracking_server, own_pipeline, brief_http, prepared_data, params, tmp_path, monkeypatch, caplog
):
    tiny = fast_tiny(params, max_train_rows=12)  # 3 steps: 5 metric calls with the validation and the summary
    calls = MetricCalls(monkeypatch, before={2: tracking_server.kill})
    models = tmp_path / "models"
    with caplog.at_level(logging.WARNING, logger="facectx.tracking"):
        result = train(tiny, 8, prepared_data, models, own_pipeline)  # the stage ends normally
    assert result["steps"] == 3 and calls.calls == 5
    assert (models / "stage_8" / "checkpoint" / "model.safetensors").is_file()
    assert calls.http_timeouts == {tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]}  # short, not MLflow's 120 s
    tracker = calls.trackers[0]
    spool = tmp_path / "runs" / tracking.SPOOL_DIR / tracker.run_id
    assert (
        tracker.spool_dir == spool and json.loads((spool / tracking.SPOOL_FILE).read_text())["run_id"] == tracker.run_id
    )
    warnings = [r.getMessage() for r in caplog.records]
    assert any(str(spool) in w and "stopped answering" in w for w in warnings), warnings
    assert any(str(spool) in w and "replay_pending" in w for w in warnings), warnings  # not sent at the end: said so
    assert any(tracker.run_id in w and "shows RUNNING there" in w for w in warnings), warnings

    # The server is back: the next stage sends the spool to the same run first.
    tracking_server.start()
    train(tiny, 16, prepared_data, models, own_pipeline)
    client = MlflowClient(tracking_server.url)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["facectx.tracking_spool"] == str(spool)
    assert "did not answer" in run.data.tags["facectx.tracking_outage"]
    assert run.data.tags["facectx.capped"] == "false"  # a tag set while the server was down
    logged = calls.logged[tracker.run_id]
    keys = {key for key, _, _ in logged}
    assert history(client, tracker.run_id, keys) == logged  # every step of every metric, once
    assert [a.path for a in client.list_artifacts(tracker.run_id, "samples")] == ["samples/stage_8_epoch_000.png"]
    assert json.loads((spool / tracking.SPOOL_FILE).read_text())["replayed_ms"]


def test_database_restart_and_outage_mid_stage(
    tracking_server, own_pipeline, brief_http, prepared_data, params, tmp_path, monkeypatch, caplog
):
    """PostgreSQL restarted between two metric logs: the server reconnects and the run goes on.
    PostgreSQL down for two logs: the server answers 500, the stage spools, and sends the rest when
    it ends (the database is back by then). The database holds every metric step once."""
    postgres = tracking_server.postgres
    tiny = fast_tiny(params, max_train_rows=12)
    spooling = []
    calls = MetricCalls(
        monkeypatch,
        before={2: postgres.restart, 3: postgres.stop},
        after={2: lambda: spooling.append(calls.trackers[-1].spool is not None), 4: postgres.start},
    )
    models = tmp_path / "models"
    with caplog.at_level(logging.WARNING, logger="facectx.tracking"):
        train(tiny, 8, prepared_data, models, own_pipeline)
    assert (models / "stage_8" / "checkpoint" / "model.safetensors").is_file()
    tracker = calls.trackers[0]
    assert spooling == [False]  # the restart alone went unnoticed
    assert tracker.spool is not None and any(str(tracker.spool_dir) in r.getMessage() for r in caplog.records)

    client = MlflowClient(tracking_server.url)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["facectx.tracking_spool"] == str(tracker.spool_dir)
    rows = postgres.query(
        "SELECT key, step, value FROM metrics WHERE run_uuid = %s AND key NOT LIKE 'system/%%'", (tracker.run_id,)
    )
    assert sorted(rows) == sorted(calls.logged[tracker.run_id])  # complete, and nothing twice
