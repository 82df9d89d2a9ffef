"""The Kubeflow pipeline compiles, and runs end to end with kfp.local on real photos."""
from __future__ import annotations

import json

import pandas as pd
import yaml
from kfp import local
from mlflow.tracking import MlflowClient

from pipelines.compile import compile_all


def test_pipeline_compiles_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-into-yaml")
    [path] = compile_all(tmp_path)
    text = path.read_text()
    assert "must-not-leak-into-yaml" not in text
    spec = yaml.safe_load_all(text).__next__()
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest", "validate", "prepare", "train-stage", "train-stage-5", "evaluate", "register", "promote"} <= set(tasks)
    assert "train-stage-5" in tasks["evaluate"]["dependentTasks"]
    assert {"evaluate", "train-stage-5"} <= set(tasks["register"]["dependentTasks"])
    assert tasks["promote"]["dependentTasks"] == ["register"]
    # params' compare (the ProGAN variant by default): a parallel chain of five GPU stages per variant
    loop = next(name for name in tasks if name.startswith("for-loop"))
    assert "compared-variants" in tasks[loop]["dependentTasks"] and loop in tasks["evaluate"]["dependentTasks"]
    variant_tasks = spec["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert len(variant_tasks) == 5
    assert tasks["prepare"]["dependentTasks"] == ["ingest", "validate"]
    assert tasks["train-stage-2"]["dependentTasks"] == ["prepare", "train-stage"]  # 16 starts from 8
    platform = list(yaml.safe_load_all(text))[1]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for gpu_step in (executors["exec-train-stage"], executors["exec-train-stage-6"]):  # cascade, first variant stage
        assert gpu_step["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert gpu_step["secretAsEnv"][0]["secretName"] == "facectx-s3"
    resources = spec["deploymentSpec"]["executors"]["exec-train-stage"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "1"


def test_pipeline_runs_locally(sample_source, tmp_path, params, monkeypatch):
    from facectx.config import dump_params
    import dataclasses

    from conftest import tiny_training_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    quick = tiny_training_params(params, max_train_rows=8, val_rows=2)
    quick = dataclasses.replace(quick, evaluate=dataclasses.replace(params.evaluate, max_photos=4, batch_size=4,
                                                                    calibration_pairs=20),
                                validate=dataclasses.replace(params.validate, workers=1, min_valid_fraction=0.5),
                                prepare=dataclasses.replace(params.prepare, workers=1, split=dataclasses.replace(
                                    params.prepare.split, val_fraction=0.4)))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    from pipelines.training import training_pipeline

    run = training_pipeline(source=str(sample_source), params_yaml=dump_params(quick),
                            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run is not None
    metrics_files = list((tmp_path / "kfp").rglob("metrics.json"))
    prepared = [p.parent for p in metrics_files if (p.parent / "train" / "index.parquet").is_file()]
    assert len(prepared) == 1
    metrics = json.loads((prepared[0] / "metrics.json").read_text())
    assert metrics["prepared"] + metrics["quarantined"] == metrics["photos_found"] == len(list(sample_source.rglob("*.jpg")))
    assert len(pd.read_parquet(prepared[0] / "test" / "index.parquet")) > 0
    final = [json.loads(p.read_text()) for p in (tmp_path / "kfp").rglob("checkpoint/meta.json")]
    assert sorted(meta["model_args"]["kind"] for meta in final if meta["stage"] == 128) == ["cascade", "progan"]
    reports = list((tmp_path / "kfp").rglob("report.html"))
    assert reports and "cascade" in reports[0].read_text() and "progan" in reports[0].read_text()
    # register -> promote: the first version of the model becomes champion, with the gate metrics
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(quick.registry.model_name, "champion")
    assert int(champion.version) == 1
    assert int(client.get_model_version_by_alias(quick.registry.model_name, "challenger").version) == 1
    assert float(champion.tags["metric.fd"]) > 0
