"""hallucinate-dataset against real services: photos read from and frames written to S3
(SeaweedFS, credentials from the environment only), the model taken from an MLflow registry by
alias, and the MLflow run that records what the run did."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import s3_client

NAME = "facectx-hallucinate-test"
PEOPLE = ("Aaron_Peirsol", "Abdullah_Gul")


@pytest.fixture
def registry_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts (mlartifacts/) land beside the store
    return uri


def _register(tiny_cascade, prepared_data, tmp_path) -> dict:
    from facectx.steps.register import register_step

    tiny = tiny_cascade.params
    tiny = dataclasses.replace(tiny, registry=dataclasses.replace(tiny.registry, model_name=NAME))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": {"cascade": {"fd": 1.0, "identity_match": 0.5, "perceptual": 0.3}}}))
    return register_step(
        tiny, tiny_cascade.checkpoint, metrics, prepared_dir=prepared_data, raw_dir=prepared_data.parent / "raw"
    )


def _upload_photos(client, lfw_dir, bucket: str) -> int:
    client.create_bucket(Bucket=bucket)
    count = 0
    for person in PEOPLE:
        for photo in sorted((lfw_dir / "images" / person).iterdir())[:3]:
            client.upload_file(str(photo), bucket, f"faces/{person}/{photo.name}")
            count += 1
    client.put_object(Bucket=bucket, Key=f"faces/{PEOPLE[0]}/broken.jpg", Body=b"not a photo")
    return count + 1


def test_s3_in_and_out_with_a_registry_model_and_its_mlflow_run(
    s3_env, registry_store, tiny_cascade, prepared_data, quick_params, lfw_dir, tmp_path
):
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    registered = _register(tiny_cascade, prepared_data, tmp_path)
    client = s3_client(s3_env)
    found = _upload_photos(client, lfw_dir, "hd-in")
    client.create_bucket(Bucket="hd-out")
    h = dataclasses.replace(quick_params.hallucinate, shard_photos=3, batch_size=2, workers=1, device="cpu")
    params = dataclasses.replace(quick_params, hallucinate=h)
    cache = tmp_path / "model-cache"
    report = hallucinate_dataset_step(
        params, "s3://hd-in/faces", "s3://hd-out/run", f"models:/{NAME}@challenger", cache_dir=str(cache)
    )
    assert report["photos_found"] == found and report["accounted_for"]
    assert (cache / f"{NAME}-v{registered['version']}" / "checkpoint" / "meta.json").is_file()

    keys = {o["Key"] for o in client.list_objects_v2(Bucket="hd-out", Prefix="run/")["Contents"]}
    assert {"run/hallucinate.json", "run/listing.parquet", "run/manifest.parquet", "run/summary.json"} <= keys
    assert {f"run/shards/shard-0000{i}/_COMPLETE" for i in range(3)} <= keys  # 7 photos, 3 a shard
    manifest = pd.read_parquet(
        io.BytesIO(client.get_object(Bucket="hd-out", Key="run/manifest.parquet")["Body"].read())
    )
    assert len(manifest) == report["written"] > 0
    assert set(manifest.model_name) == {NAME} and set(manifest.model_version) == {str(registered["version"])}
    assert set(manifest.model_run_id) == {registered["run_id"]}
    assert all(f"run/{path}" in keys for path in manifest.frame_path)
    assert all(uri.startswith("s3://hd-in/faces/") for uri in manifest.source_uri)

    mlflow = MlflowClient(registry_store)
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id],
        "tags.`facectx.stage` = 'hallucinate-dataset'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["facectx.model_version"] == str(registered["version"])
    assert run.data.tags["facectx.model_run_id"] == registered["run_id"]
    assert run.data.metrics["written"] == report["written"] and run.data.metrics["photos_found"] == found
    assert run.data.metrics["quarantined_decodes_to_8bit_rgb"] == 1  # broken.jpg, by its reason
    assert run.data.metrics["photos_per_second"] > 0
    artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    assert {"sample_grid.png", "hallucinate_summary.json"} <= artifacts


def test_a_registry_version_that_does_not_exist_is_named(registry_store, tiny_cascade, prepared_data, tmp_path):
    from facectx.bulk.model import ModelNotFound, resolve_model

    _register(tiny_cascade, prepared_data, tmp_path)
    with pytest.raises(ModelNotFound, match=f"no alias champion of model '{NAME}'.*facectx promote"):
        resolve_model(f"models:/{NAME}@champion", tmp_path / "cache")
    with pytest.raises(ModelNotFound, match="no version 9 of model"):
        resolve_model(f"models:/{NAME}/9", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    shutil.rmtree(tmp_path / "mlartifacts", ignore_errors=True)
