"""MLflow runs and how they nest: one run per pipeline run; under it a run per model (the cascade,
each compared variant) holding a run per training stage, and a run each for evaluation,
registration and promotion. The pipeline run is found by its key (a tag), so steps that run as
separate processes — DVC stages, Kubeflow pods — attach to the same parent. Kubeflow passes its
run id as the key (a component input), `facectx airgap run` its visit's id (`train --pipeline-run`);
elsewhere the key is the model, settings hash and data version.

Every function takes the tracking URI and the experiment as arguments (None: settings.py's default).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from facectx.tracking import settings
from facectx.tracking.server import (
    TrackingUnavailable,
    check_reachable,
    env,
    redacted,
    server_unavailable,
    unreachable_reason,
)
from facectx.tracking.shared_runs import experiment_id_of, model_run, pipeline_run
from facectx.tracking.util import one_line

# mlflow is imported inside the functions: it is optional where runs are tracked into folders
# (an air-gapped node), and facectx.tracking, which imports this module, must load there.

log = logging.getLogger(__name__)


def connect(uri: str):
    """A client of the tracking server at `uri`, which MLflow's fluent calls (start_run,
    register_model) then use too. A server that is down is a TrackingUnavailable error naming it,
    here, before anything runs (not minutes of retries, then a stack trace)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


@contextlib.contextmanager
def pipeline_parent(key: str, model: str = "", tracking_uri: str | None = None, experiment: str | None = None):
    """Make the pipeline run for `key` (and, given `model`, its nested run for that model: the
    cascade or a compared variant, holding that model's stage runs) the active MLflow run, so runs
    started inside nest under it; yields (client, experiment id). A tracking server that is down
    (or cannot reach its database) is a TrackingUnavailable error here, before anything runs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = settings.tracking_uri(tracking_uri)
    client = connect(uri)
    try:
        experiment_id = experiment_id_of(client, uri, settings.experiment_name(experiment))
        mlflow.set_experiment(experiment_id=experiment_id)
        parent_id = pipeline_run(client, experiment_id, key)
        model_id = model_run(client, experiment_id, parent_id, model) if model else None
    except MlflowException as err:
        if not server_unavailable(err):
            raise
        raise TrackingUnavailable(
            f"MLflow tracking server {redacted(uri)} answers but cannot serve requests "
            f"(is its database up?): {one_line(err)}; nothing was run"
        ) from err
    with run_block(uri, run_id=parent_id):
        if not model_id:
            yield client, experiment_id
            return
        with run_block(uri, run_id=model_id, nested=True):
            yield client, experiment_id


@contextlib.contextmanager
def run_block(uri: str, **start_kwargs):
    """mlflow.start_run as a block whose end survives a server that is gone: the run then stays
    RUNNING in MLflow (a warning says so) instead of failing a stage whose work is done."""
    import mlflow

    run = mlflow.start_run(**start_kwargs)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run.info.run_id:
            _end_run(uri, run.info.run_id, status)


def _end_run(uri: str, run_id: str, status: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    down = unreachable_reason(uri, timeout=2.0)
    try:
        # A server known to be down gets one try, not a round of retries per run being ended.
        with env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}) if down else contextlib.nullcontext():
            mlflow.end_run(status)
    except MlflowException as err:
        if not server_unavailable(err):
            raise
        log.warning(
            "MLflow run %s could not be marked %s: %s does not answer (%s); it shows RUNNING there",
            run_id,
            status,
            redacted(uri),
            down or one_line(err),
        )
        _stop_system_metrics(run_id)


def _stop_system_metrics(run_id: str) -> None:
    """end_run stops the run's system-metrics thread only after the server call that failed."""
    from mlflow.tracking import fluent

    monitor = getattr(fluent, "run_id_to_system_metrics_monitor", {}).pop(run_id, None)
    if monitor is not None:
        monitor.finish()


# --------------------------------------------------------------------------- runs of other steps


def use_experiment(tracking_uri: str | None = None, experiment: str | None = None) -> str:
    """Make the facectx experiment (created as the stage runs create it) the active one; its id."""
    import mlflow

    uri = settings.tracking_uri(tracking_uri)
    experiment_id = experiment_id_of(connect(uri), uri, settings.experiment_name(experiment))
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def step_run(
    run_name: str, tags: dict[str, str], tracking_uri: str | None = None, experiment: str | None = None
) -> Iterator[str]:
    """An MLflow run in the facectx experiment for a step that is not training (registration, a
    promotion decision), nested under the active run when there is one (the pipeline run of
    pipeline_parent); yields its run id. log_metrics, log_dict and log_python_model log into it."""
    import mlflow

    experiment_id = use_experiment(tracking_uri, experiment)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=mlflow.active_run() is not None
    ) as run:
        mlflow.set_tags(tags)
        yield run.info.run_id


def log_metrics(metrics: dict[str, float]) -> None:
    """Metrics of the active run (step_run's)."""
    import mlflow

    mlflow.log_metrics({key: float(value) for key, value in metrics.items()})


def log_dict(data: dict, artifact_file: str) -> None:
    """A JSON artifact of the active run (step_run's)."""
    import mlflow

    mlflow.log_dict(data, artifact_file)


def log_image(image, artifact_file: str) -> None:
    """An image artifact (an (H, W, 3) uint8 array) of the active run (step_run's)."""
    import mlflow

    mlflow.log_image(image, artifact_file=artifact_file)
