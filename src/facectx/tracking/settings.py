"""Where tracking goes: the tracking URI and the experiment, each an argument of the functions that
need it. The experiment is a setting (params' tracking.experiment); the tracking server is the
user's: when no URI is given, MLFLOW_TRACKING_URI decides, read here and only here, when it is
needed (never at import)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_EXPERIMENT = "facectx"
KEY_TAG = "facectx.pipeline_key"


def tracking_uri(uri: str | None = None) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory, made
    absolute so temporary copies (`dvc exp run --temp`) log to the same store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def experiment_name(name: str | None = None) -> str:
    """`name` (params' tracking.experiment), else "facectx": the MLflow experiment runs go to."""
    return name or DEFAULT_EXPERIMENT
