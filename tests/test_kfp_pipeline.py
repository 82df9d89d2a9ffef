"""The Kubeflow pipeline compiles, and runs end to end with kfp.local on real photos."""
from __future__ import annotations

import json

import pandas as pd
import yaml
from kfp import local

from pipelines.compile import compile_all


def test_pipeline_compiles_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-into-yaml")
    [path] = compile_all(tmp_path)
    text = path.read_text()
    assert "must-not-leak-into-yaml" not in text
    spec = yaml.safe_load_all(text).__next__()
    assert set(spec["root"]["dag"]["tasks"]) == {"ingest", "validate", "prepare"}
    assert spec["root"]["dag"]["tasks"]["prepare"]["dependentTasks"] == ["ingest", "validate"]


def test_pipeline_runs_locally(sample_source, tmp_path, params):
    from facectx.config import dump_params
    import dataclasses

    quick = dataclasses.replace(params, validate=dataclasses.replace(params.validate, workers=1, min_valid_fraction=0.5),
                                prepare=dataclasses.replace(params.prepare, workers=1))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    from pipelines.training import training_pipeline

    run = training_pipeline(source=str(sample_source), params_yaml=dump_params(quick))
    assert run is not None
    metrics_files = list((tmp_path / "kfp").rglob("metrics.json"))
    prepared = [p.parent for p in metrics_files if (p.parent / "train" / "index.parquet").is_file()]
    assert len(prepared) == 1
    metrics = json.loads((prepared[0] / "metrics.json").read_text())
    assert metrics["prepared"] + metrics["quarantined"] == metrics["photos_found"] == len(list(sample_source.rglob("*.jpg")))
    assert len(pd.read_parquet(prepared[0] / "test" / "index.parquet")) > 0
