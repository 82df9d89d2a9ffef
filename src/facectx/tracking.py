"""The one module that logs to MLflow.

One MLflow run per pipeline run, a nested run per stage. The pipeline run is found by its key
(a tag), so stages that run as separate processes — DVC stages, Kubeflow pods — attach to the
same parent. The key defaults to the settings hash + data version; FACECTX_PIPELINE_RUN (e.g. a
Kubeflow run id) overrides it. Tracking URI: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the
working directory, made absolute so temporary copies (`dvc exp run --temp`) log to the same store.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

EXPERIMENT = os.environ.get("FACECTX_EXPERIMENT", "facectx")
KEY_TAG = "facectx.pipeline_key"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def pipeline_key(default: str) -> str:
    return os.environ.get("FACECTX_PIPELINE_RUN") or default


def flatten(prefix: str, value) -> dict[str, str]:
    """Nested dicts -> {"a.b.c": value} for mlflow.log_params."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value if not isinstance(value, (list, tuple)) else list(value)}


class Tracker:
    """What training reports; thin over an active MLflow run."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        import mlflow

        mlflow.log_image(image, artifact_file=artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(data, artifact_file)

    def log_artifacts(self, folder) -> None:
        import mlflow

        mlflow.log_artifacts(str(folder))

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)


@contextlib.contextmanager
def stage_run(key: str, stage_name: str, params: dict, tags: dict[str, str] | None = None) -> Iterator[Tracker]:
    """Open (or reopen) the pipeline run for `key` and a nested run for this stage."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    if client.get_experiment_by_name(EXPERIMENT) is None and tracking_uri().startswith("sqlite:"):
        # Next to the local store, absolute: a temporary working copy must not take the artifacts with it.
        client.create_experiment(EXPERIMENT, artifact_location=Path("mlartifacts").resolve().as_uri())
    experiment = mlflow.set_experiment(EXPERIMENT)
    parent_id = _pipeline_run(client, experiment.experiment_id, key)
    with mlflow.start_run(run_id=parent_id):
        with mlflow.start_run(run_name=stage_name, nested=True, log_system_metrics=True) as run:
            mlflow.log_params(flatten("", params))
            mlflow.set_tags({"facectx.stage": stage_name, **(tags or {})})
            yield Tracker(run.info.run_id)


def _pipeline_run(client, experiment_id: str, key: str) -> str:
    """The parent run for `key`: the earliest one. Steps that start at the same moment (Kubeflow
    runs the cascade's and the variants' first stages in parallel) may each create one; both
    then settle on the earliest, and the other creator deletes its empty duplicate."""
    def earliest():
        found = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1,
                                   order_by=["attributes.start_time ASC", "attributes.run_id ASC"])
        return found[0].info.run_id if found else None

    existing = earliest()
    if existing:
        return existing
    created = client.create_run(experiment_id, run_name=f"pipeline-{key[:12]}", tags={KEY_TAG: key}).info.run_id
    parent = earliest()
    if parent != created:
        client.delete_run(created)
    return parent
