"""The one package that talks to MLflow (or, without it, logs to a run folder).

    protocol.py        StageTracker: what training and evaluation call (log_metrics, log_image,
                       log_artifacts, set_tags, close); TrackingBackend: a class that opens one
    stage.py           stage_run: picks the backend by name from BACKENDS (`tracking.backend`)
    mlflow_backend.py  MlflowTracker: a stage's MLflow run, spooling through a server outage
    mlflow_runs.py     how MLflow runs nest (pipeline -> model -> stage), step runs
    shared_runs.py     the experiment, pipeline and model runs concurrent steps share, converging
    attempts.py        a stage run a killed attempt left RUNNING, closed by the next attempt
    folder.py          FolderTracker: a stage's records in a folder (no MLflow needed)
    spool.py           the outage spool: kept in the folder layout, sent to MLflow later
    server.py          a tracking server that fails: probing, outage errors, HTTP settings
    models.py          the model registry and logged pyfunc models (registry.py, serving.py)
    airgap_import.py   run folders from an air-gapped node replayed into MLflow
    settings.py        tracking URI (argument, else the environment), experiment, spool folder

mlflow is optional (an air-gapped GPU node tracks into folders): no module here imports it at
import time.
"""

from facectx.tracking.airgap_import import import_folder_runs
from facectx.tracking.folder import FolderTracker, folder_stage_path, system_info
from facectx.tracking.mlflow_backend import MlflowTracker
from facectx.tracking.mlflow_runs import log_dict, log_image, log_metrics, pipeline_parent, step_run, use_experiment
from facectx.tracking.models import (
    ModelRegistry,
    download_model_artifact,
    invalid_input,
    log_python_model,
    python_model_base,
    set_served_model,
)
from facectx.tracking.protocol import StageSpec, StageTracker, TrackingBackend, closed_at_exit
from facectx.tracking.server import (
    HTTP_DEFAULTS,
    PROBE_TIMEOUT_S,
    TrackingUnavailable,
    check_reachable,
    redacted,
    server_unavailable,
    unreachable_reason,
)
from facectx.tracking.settings import DEFAULT_EXPERIMENT, KEY_TAG, SPOOL_DIR, experiment_name, spool_root, tracking_uri
from facectx.tracking.spool import SPOOL_FILE, replay_pending, replay_spool
from facectx.tracking.stage import BACKENDS, backend, mlflow_installed, stage_run
from facectx.tracking.util import flatten

Tracker = MlflowTracker  # its name before the backends were split

__all__ = [
    "BACKENDS",
    "DEFAULT_EXPERIMENT",
    "HTTP_DEFAULTS",
    "KEY_TAG",
    "PROBE_TIMEOUT_S",
    "SPOOL_DIR",
    "SPOOL_FILE",
    "FolderTracker",
    "MlflowTracker",
    "ModelRegistry",
    "StageSpec",
    "StageTracker",
    "Tracker",
    "TrackingBackend",
    "TrackingUnavailable",
    "backend",
    "check_reachable",
    "download_model_artifact",
    "closed_at_exit",
    "experiment_name",
    "flatten",
    "folder_stage_path",
    "import_folder_runs",
    "invalid_input",
    "log_dict",
    "log_image",
    "log_metrics",
    "log_python_model",
    "mlflow_installed",
    "pipeline_parent",
    "python_model_base",
    "redacted",
    "replay_pending",
    "replay_spool",
    "server_unavailable",
    "set_served_model",
    "spool_root",
    "stage_run",
    "step_run",
    "system_info",
    "tracking_uri",
    "unreachable_reason",
    "use_experiment",
]
