"""The facectx-hallucinate Kubeflow pipeline compiles to list -> one retried GPU step per group of
shards (a ParallelFor) -> gather, with the model, parallelism and services as run parameters."""

from __future__ import annotations

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
