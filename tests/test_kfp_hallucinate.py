"""The facectx-hallucinate Kubeflow pipeline compiles to list -> one retried GPU step per group of
shards (a ParallelFor) -> gather, with the model, parallelism and services as run parameters."""

from __future__ import annotations

import json

import yaml

from conftest import REPO


def test_the_hallucinate_pipeline_compiles_for_a_cluster(tmp_path, monkeypatch):
    from pipelines.compile import compile_pipeline

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-into-yaml")
    path = compile_pipeline(REPO / "params.yaml", tmp_path / "h.yaml", "registry/facectx:1", 1, 0, None, "hallucinate")
    text = path.read_text()
    assert "must-not-leak-into-yaml" not in text
    spec, platform = list(yaml.safe_load_all(text))
    assert spec["pipelineInfo"]["name"] == "facectx-hallucinate"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert {"source", "out", "model", "parallelism", "mlflow_tracking_uri", "s3_endpoint"} <= set(inputs)
    assert inputs["model"]["defaultValue"] == "models:/facectx-cascade@champion"
    root = spec["root"]["dag"]["tasks"]
    loop = next(task for task in root.values() if "parameterIterator" in task)
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("pipelinechannel--hallucinate-start-Output")
    assert root["hallucinate-gather"]["dependentTasks"] == [loop["taskInfo"]["name"]]
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]["hallucinate-group"]
    assert inner["retryPolicy"]["maxRetryCount"] == 3
    executors = spec["deploymentSpec"]["executors"]
    group_executor = spec["components"][inner["componentRef"]["name"]]["executorLabel"]
    assert executors[group_executor]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert {e["container"]["image"] for e in executors.values()} == {"registry/facectx:1"}
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][group_executor]["secretAsEnv"]
    assert {s["secretName"] for s in secrets} == {"facectx-s3", "facectx-mlflow"}


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """{key below prefix: bytes} of every object under s3://bucket/prefix."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) :]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def _table(objects: dict[str, bytes], name: str):
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(objects[name]))


def test_the_hallucinate_pipeline_runs_locally_as_the_single_process_command(
    s3_server, tiny_cascade, prepared_data, quick_params, lfw_dir, kfp_local, tmp_path, monkeypatch
):
    """kfp.local: list an S3 prefix of real LFW photos -> a ParallelFor over 2 groups of shards ->
    gather, the model from an MLflow registry by alias. The gathered OUT holds the bytes a
    single-process `hallucinate-dataset` run writes: frames, manifest, quarantine, listing, stamp."""
    import dataclasses

    from mlflow.tracking import MlflowClient
    from test_hallucinate_services import NAME, _register, _upload_photos

    from conftest import s3_client
    from facectx.config import dump_params
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step
    from pipelines.hallucinate import build_hallucinate_pipeline

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)  # registry artifacts (mlartifacts/) land beside the store
    _register(tiny_cascade, prepared_data, tmp_path)
    client = s3_client(s3_server)
    found = _upload_photos(client, lfw_dir, "hk-in")  # 6 photos and one that is no photo
    client.create_bucket(Bucket="hk-out")
    h = dataclasses.replace(
        quick_params.hallucinate, shard_photos=2, batch_size=2, workers=1, device="cpu", model_cache=str(tmp_path / "c")
    )
    params = dataclasses.replace(quick_params, hallucinate=h)
    model = f"models:/{NAME}@challenger"
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    single = hallucinate_dataset_step(params, "s3://hk-in/faces", "s3://hk-out/single", model, track=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the steps reach the object store through the run parameter

    params_file = tmp_path / "params.yaml"
    params_file.write_text(dump_params(params))
    pipeline = build_hallucinate_pipeline(params_file, gpus=0)
    run = pipeline(
        source="s3://hk-in/faces",
        out="s3://hk-out/kfp",
        model=model,
        parallelism=2,
        params_yaml=dump_params(params),
        mlflow_tracking_uri=store,
        s3_endpoint=s3_server["AWS_ENDPOINT_URL"],
    )
    assert run is not None
    by_kfp, by_single = _objects(client, "hk-out", "kfp/"), _objects(client, "hk-out", "single/")
    gathered = json.loads(by_kfp["summary.json"])
    assert gathered["photos_found"] == found == single["photos_found"]
    assert gathered["written"] + gathered["quarantined"] == found and gathered["accounted_for"]
    assert len([k for k in by_kfp if k.startswith("shards/") and "/frames/" in k]) == single["written"] > 0
    differing = sorted(k for k in by_single.keys() | by_kfp.keys() if by_single.get(k) != by_kfp.get(k))
    assert differing == [], differing  # every frame, shard table, the gathered tables, listing and stamp
    assert _table(by_kfp, "manifest.parquet").equals(_table(by_single, "manifest.parquet"))
    mlflow = MlflowClient(store)
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id],
        "tags.`facectx.stage` = 'hallucinate-dataset'",
    )
    assert [r.data.tags["facectx.out"] for r in runs] == ["s3://hk-out/kfp"]
    metrics = runs[0].data.metrics
    assert (
        metrics["groups"] == 2 and metrics["photos_run"] == found and metrics["shards_run"] == 4
    )  # 7 photos, 2 a shard
