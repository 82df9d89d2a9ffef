"""Where tracking goes: the tracking URI and the experiment. Each is an
argument of the functions that need it; when none is given, the user's environment decides, read
here and only here, when it is needed (never at import)."""

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
    """`name`, else FACECTX_EXPERIMENT, else "facectx": the MLflow experiment runs go to."""
    return name or os.environ.get("FACECTX_EXPERIMENT") or DEFAULT_EXPERIMENT
