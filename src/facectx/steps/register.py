"""register and promote: the trained cascade logged as an MLflow model, registered as the
`challenger`, and made `champion` when it wins the gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

from facectx import registry, tracking
from facectx.checkpoint import RUNNING_CHOICE
from facectx.config import Params
from facectx.layout import CASCADE
from facectx.serving import log_pyfunc_model
from facectx.steps.run_key import under_pipeline_run

# How the metrics were measured: the gate compares only versions measured the same way.
PROTOCOL_KEYS = ("matcher", "fd_network", "perceptual_network", "photos", "test_set")
# Which of the checkpoint's weights the registered model serves (running, standing or ema).
WEIGHTS_TAG = "facectx.weights"


def register_step(
    params: Params,
    checkpoint_dir: str | os.PathLike,
    metrics_file: str | os.PathLike,
    example_photo: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
    raw_dir: str | os.PathLike | None = None,
    method: str = CASCADE,
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
    data_tags: dict[str, str] | None = None,
) -> dict:
    """Log the checkpoint as a pyfunc model in an MLflow run and register it as the `challenger`;
    its gate metrics are the evaluation's metrics.json["methods"][method]. The run nests under the
    pipeline run `pipeline_run` when given (Kubeflow's run id); data_tags (the data version) tag
    both the run and the model version. The model serves the weights the gate row scored
    (metrics.json's `weights`; running for an evaluation made before the choice existed), and
    says which in the tag facectx.weights and in its metadata."""
    evaluation, metrics = _gate_metrics(Path(metrics_file), method)
    weights = evaluation.get("weights", {}).get(method, RUNNING_CHOICE)
    name = params.registry.model_name
    tags = {
        "facectx.stage": "register",
        "facectx.checkpoint": str(Path(checkpoint_dir).resolve()),
        "facectx.metrics_file": str(Path(metrics_file).resolve()),
        WEIGHTS_TAG: weights,
        **(data_tags or {}),
    }
    # Nested under the pipeline run when there is one (pipeline_parent makes it the active run).
    with (
        under_pipeline_run(pipeline_run, tracking_uri, params.tracking.experiment),
        tracking.step_run(f"register-{name}", tags, tracking_uri, params.tracking.experiment) as run_id,
    ):
        info = log_pyfunc_model(
            checkpoint_dir,
            params,
            metrics,
            example_photo=example_photo,
            prepared_dir=prepared_dir,
            raw_dir=raw_dir,
            weights=weights,
        )
        protocol = {key: evaluation[key] for key in PROTOCOL_KEYS if key in evaluation}
        version_tags = {**(data_tags or {}), WEIGHTS_TAG: weights}
        version = registry.register(info.model_uri, name, metrics, run_id, protocol, tracking_uri, version_tags)
    return {
        "model_name": name,
        "version": version,
        "model_uri": info.model_uri,
        "run_id": run_id,
        "metrics": metrics,
        "weights": weights,
    }


def _gate_metrics(metrics_file: Path, method: str) -> tuple[dict, dict[str, float]]:
    """The evaluation's metrics.json, and `method`'s numeric metrics from it."""
    if not metrics_file.is_file():
        raise FileNotFoundError(f"metrics file not found: {metrics_file} (run `facectx evaluate` first)")
    evaluation = json.loads(metrics_file.read_text())
    methods = evaluation.get("methods", {})
    if method not in methods:
        raise ValueError(f"{metrics_file}: no methods.{method} entry (found {sorted(methods)})")
    metrics = {
        k: float(v) for k, v in methods[method].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return evaluation, metrics


def promote_step(
    params: Params,
    expected_version: int | None = None,
    force: bool = False,
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Champion <- challenger if there is no champion or it wins on every registry.gate_metrics entry
    (measured the same way); `force` skips the gate. The decision's run nests under the pipeline
    run `pipeline_run` when given."""
    with under_pipeline_run(pipeline_run, tracking_uri, params.tracking.experiment):
        return registry.promote(
            params.registry.model_name,
            params.registry.gate_metrics,
            expected_version,
            force,
            tracking_uri,
            params.tracking.experiment,
        )
