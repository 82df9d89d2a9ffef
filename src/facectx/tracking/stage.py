"""stage_run: track one training stage or evaluation with the configured backend. A backend is a
class behind the StageTracker protocol that opens itself for a stage (protocol.TrackingBackend);
BACKENDS names them, as `tracking.backend` in params does."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

from facectx.config import TrackingConfig
from facectx.tracking import settings
from facectx.tracking.folder import FolderTracker
from facectx.tracking.mlflow_backend import MlflowTracker
from facectx.tracking.protocol import StageSpec, StageTracker, TrackingBackend
from facectx.tracking.util import flatten

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[TrackingBackend]] = {
    "mlflow": MlflowTracker,
    "folder": FolderTracker,
}
DEFAULT_FOLDER = "runs"


def mlflow_installed() -> bool:
    try:
        return importlib.util.find_spec("mlflow") is not None
    except ImportError:  # an import hook that forbids it (the air-gap rehearsal) counts as absent
        return False


def backend(config: TrackingConfig | None) -> str:
    """The configured backend's name (BACKENDS), or "folder" where MLflow is wanted but not installed."""
    wanted = config.backend if config else "mlflow"
    if wanted == "mlflow" and not mlflow_installed():
        log.warning(
            "mlflow is not installed: tracking into the run folder %s instead",
            config.folder if config else DEFAULT_FOLDER,
        )
        return "folder"
    return wanted


@contextlib.contextmanager
def stage_run(
    key: str,
    stage_name: str,
    params: dict,
    tags: dict[str, str] | None = None,
    config: TrackingConfig | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    lineage_tags: dict[str, str] | None = None,
) -> Iterator[StageTracker]:
    """Track stage `stage_name` of the pipeline run `key` with the configured backend (config:
    params' `tracking`; default: MLflow, runs/ for folders): a nested MLflow run under the pipeline
    run, or a stage folder under the pipeline run's folder. tracking_uri, experiment: where MLflow
    runs go (default: settings.tracking_uri(), config.experiment). lineage_tags: tags of this run
    and of the runs it nests under (the data version a pipeline run was made from)."""
    spec = StageSpec(
        key=key,
        name=stage_name,
        params=flatten("", params),
        tags={"facectx.stage": stage_name, **(tags or {}), **(lineage_tags or {})},
        folder=Path(config.folder if config else DEFAULT_FOLDER),
        tracking_uri=settings.tracking_uri(tracking_uri),
        experiment=settings.experiment_name(experiment or (config.experiment if config else None)),
        spool_folder=config.spool_folder if config else "",
        lineage_tags=dict(lineage_tags or {}),
    )
    name = backend(config)
    if name not in BACKENDS:
        raise ValueError(f"tracking.backend {name!r}: expected one of {', '.join(sorted(BACKENDS))}")
    with BACKENDS[name].open_stage(spec) as tracker:
        yield tracker
