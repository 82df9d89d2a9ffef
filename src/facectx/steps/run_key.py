"""Which MLflow pipeline run a step's runs nest under."""

from __future__ import annotations

import contextlib

from facectx import tracking
from facectx.checkpoint import TrainingIdentity


def local_pipeline_key(run_name: str, identity: TrainingIdentity) -> str:
    """The MLflow pipeline run a local (DVC/CLI) run's steps share: one per model, settings and data."""
    return f"{run_name}-{identity.config_hash}-{identity.data_version}"


def under_pipeline_run(pipeline_run: str | None, tracking_uri: str | None, experiment: str):
    """The pipeline run as the active MLflow run (runs started inside nest under it), or nothing."""
    if not pipeline_run:
        return contextlib.nullcontext()
    return tracking.pipeline_parent(pipeline_run, tracking_uri=tracking_uri, experiment=experiment)
