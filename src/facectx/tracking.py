"""The one module that talks to MLflow (or, without it, logs to a run folder): tracking runs,
the model registry (`ModelRegistry`, for registry.py) and logged pyfunc models (for serving.py).

One MLflow run per pipeline run; under it a run per model (the cascade, each compared variant)
holding a run per training stage, and a run each for evaluation, registration and promotion.
The pipeline run is found by its key (a tag), so steps that run as separate processes — DVC
stages, Kubeflow pods — attach to the same parent. Kubeflow passes its run id as the key (a
component input); elsewhere the key is the settings hash + data version, or FACECTX_PIPELINE_RUN
(set by `facectx airgap run`). Tracking URI: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the
working directory, made absolute so temporary copies (`dvc exp run --temp`) log to the same store.

Where MLflow is not installed (an air-gapped GPU node) or `tracking.backend` is `folder`, a
FolderTracker records the same things — params, tags, metrics per step with their times, images
and artifacts, system information — under <tracking.folder>/<pipeline key>/<stage>/, written as
they happen so a killed run keeps what it measured; `facectx airgap import` replays such folders
into MLflow.

A tracking server that fails (an http(s) tracking URI):
- down when a step starts: the step stops at once with TrackingUnavailable, one line naming the
  URI, before anything is trained or written (a /health probe with a short timeout).
- down (or its database down) during a stage: training goes on. The Tracker moves what the stage
  logs from then on into a spool folder, <tracking.folder>/mlflow-spool/<MLflow run id>/ (the
  FolderTracker layout), and says so in a warning naming that folder. When the stage ends, the
  spool is sent to the same MLflow run (every metric with its step and time, tags, images and
  artifacts, the run's final status) if the server answers again; if not, the run stays RUNNING
  in MLflow, the warning names the folder, and the next stage started with the same tracking URI
  and tracking.folder sends it first (or call replay_pending(tracking.folder) by hand). A pod's
  disk is lost with the pod: there, a spool not sent by the end of the stage is lost with it.
- While a stage runs, MLflow's HTTP client retries for seconds, not minutes (HTTP_DEFAULTS,
  used where the environment does not set them): MLflow's own defaults (7 retries with growing
  back-off, 120 s per request) would stall a training step for minutes on every call, and with
  the spool nothing is lost by giving up early.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facectx.config import TrackingConfig
from facectx.io_utils import write_json, write_png

log = logging.getLogger(__name__)

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
    """What training reports, into its MLflow run. When the tracking server stops answering (it
    is down, or its database is), the rest of the stage goes into a local spool folder instead of
    failing the training; close() sends the spool to the same run once the server answers again,
    or says where it is kept."""

    def __init__(self, run_id: str, spool_dir: str | os.PathLike, name: str):
        self.run_id = run_id
        self.name = name
        self.spool_dir = Path(spool_dir)
        self.spool: FolderTracker | None = None
        self._mlflow = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._record("log_metrics", metrics, step)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        self._record("log_image", image, artifact_file)

    def log_artifacts(self, folder) -> None:
        self._record("log_artifacts", folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record("set_tags", tags)

    def close(self, status: str) -> bool:
        """End of the stage: send the spool, if there is one. True when MLflow has everything."""
        if self.spool is None:
            return True
        self.spool.close(status)
        return replay_spool(self.spool_dir)

    def _record(self, method: str, *args) -> None:
        if self.spool is None:
            try:
                getattr(self, f"_mlflow_{method}")(*args)
                return
            except Exception as err:
                if not server_unavailable(err):
                    raise
                self._start_spool(err)
        # Once spooled, always spooled: the records stay in order, and replay sends them at once.
        getattr(self.spool, method)(*args)

    def _start_spool(self, err: BaseException) -> None:
        self.spool = FolderTracker(self.spool_dir, self.name, {}, {})
        write_json(
            self.spool_dir / SPOOL_FILE,
            {
                "tracking_uri": redacted(tracking_uri()),
                "run_id": self.run_id,
                "stage": self.name,
                "since_ms": _now_ms(),
                "error": _one_line(err),
            },
        )
        log.warning(
            "MLflow at %s stopped answering (%s): stage %s goes on, and what it logs from now on is kept in %s "
            "and sent to MLflow run %s when the server answers again",
            redacted(tracking_uri()),
            _one_line(err),
            self.name,
            self.spool_dir,
            self.run_id,
        )

    def _client(self):
        if self._mlflow is None:
            from mlflow.tracking import MlflowClient

            self._mlflow = MlflowClient(tracking_uri())
        return self._mlflow

    def _mlflow_log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        self._client().log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def _mlflow_log_image(self, image: np.ndarray, artifact_file: str) -> None:
        self._client().log_image(self.run_id, image, artifact_file=artifact_file)

    def _mlflow_log_artifacts(self, folder) -> None:
        self._client().log_artifacts(self.run_id, str(folder))

    def _mlflow_set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


RUN_FILE, METRICS_FILE, ARTIFACTS = "run.json", "metrics.csv", "artifacts"


class FolderTracker:
    """What training and evaluation report, into a folder (no MLflow needed):

    run.json      name, params (flattened), tags, status, start/end times, system information
    metrics.csv   step,timestamp_ms,key,value — one line per value, appended as it is logged
    artifacts/    images and copied folders, at their MLflow artifact paths
    """

    def __init__(self, folder: Path, name: str, params: dict[str, str], tags: dict[str, str]):
        self.folder = Path(folder)
        (self.folder / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        self.run = {
            "name": name,
            "params": {k: str(v) for k, v in params.items()},
            "tags": dict(tags),
            "status": "RUNNING",
            "start_time_ms": _now_ms(),
            "end_time_ms": None,
            "system": system_info(),
        }
        self._write_run()
        # Open for the stage's life (closed by close()), line-buffered: a kill loses at most a line.
        self._metrics = open(self.folder / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
        if self._metrics.tell() == 0:
            self._metrics.write("step,timestamp_ms,key,value\n")

    def _write_run(self) -> None:
        write_json(self.folder / RUN_FILE, self.run)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = _now_ms()
        for key, value in metrics.items():
            self._metrics.write(f"{step},{now},{key},{float(value)!r}\n")

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        write_png(self._artifact(artifact_file), image)

    def log_artifacts(self, folder) -> None:
        shutil.copytree(folder, self.folder / ARTIFACTS, dirs_exist_ok=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run["tags"].update({k: str(v) for k, v in tags.items()})
        self._write_run()

    def close(self, status: str) -> None:
        self._metrics.close()
        self.run.update(status=status, end_time_ms=_now_ms())
        if _cuda_used():
            import torch

            self.run["system"]["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self._write_run()

    def _artifact(self, artifact_file: str) -> Path:
        path = (self.folder / ARTIFACTS / artifact_file).resolve()
        if not path.is_relative_to((self.folder / ARTIFACTS).resolve()):
            raise ValueError(f"artifact path {artifact_file!r} leaves the run folder")
        return path


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cuda_used() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


def system_info() -> dict:
    """Where a run ran: what MLflow's system tags and metrics would tell, as a snapshot."""
    import torch

    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    return info


def mlflow_installed() -> bool:
    try:
        return importlib.util.find_spec("mlflow") is not None
    except ImportError:  # an import hook that forbids it (the air-gap rehearsal) counts as absent
        return False


def backend(config: TrackingConfig | None) -> str:
    """ "mlflow" or "folder": the configured backend, or folder where MLflow is not installed."""
    wanted = config.backend if config else "mlflow"
    if wanted == "mlflow" and not mlflow_installed():
        log.warning(
            "mlflow is not installed: tracking into the run folder %s instead", config.folder if config else "runs"
        )
        return "folder"
    return wanted


def _safe_name(name: str) -> str:
    """A folder name that stays one folder: no separators, never "." or ".."."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe.strip(".") else "_"


def folder_stage_path(root: str | os.PathLike, key: str, stage_name: str) -> Path:
    """<root>/<key>/<stage parts>; a stage tracked again (a resumed run) gets a numbered sibling."""
    base = Path(root) / _safe_name(key)
    for part in stage_name.split("/"):
        base = base / _safe_name(part)
    path, n = base, 1
    while (path / RUN_FILE).is_file():
        n += 1
        path = base.with_name(f"{base.name}.{n}")
    return path


@contextlib.contextmanager
def stage_run(
    key: str, stage_name: str, params: dict, tags: dict[str, str] | None = None, config: TrackingConfig | None = None
) -> Iterator[Tracker | FolderTracker]:
    """Open (or reopen) the pipeline run for `key` and a nested run for this stage (MLflow), or a
    stage folder under the pipeline run's folder (the folder backend)."""
    root = Path(config.folder if config else "runs")
    if backend(config) == "folder":
        runner = _folder_stage_run(root, key, stage_name, params, tags)
    else:
        runner = _mlflow_stage_run(key, stage_name, params, tags, root.resolve() / SPOOL_DIR)
    with runner as tracker:
        yield tracker


@contextlib.contextmanager
def _folder_stage_run(root: Path, key: str, stage_name: str, params: dict, tags: dict[str, str] | None):
    pipeline = root / _safe_name(key) / "pipeline.json"
    if not pipeline.is_file():
        write_json(pipeline, {"key": key, "experiment": EXPERIMENT, "created_ms": _now_ms()})
    with _closed_at_exit(
        FolderTracker(
            folder_stage_path(root, key, stage_name),
            stage_name,
            flatten("", params),
            {"facectx.stage": stage_name, **(tags or {})},
        )
    ) as tracker:
        yield tracker


@contextlib.contextmanager
def _closed_at_exit(tracker):
    """Close a stage's tracker with the stage's outcome: FAILED if it raised, else FINISHED."""
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")


@contextlib.contextmanager
def _mlflow_stage_run(key: str, stage_name: str, params: dict, tags: dict[str, str] | None, spool_root: Path):
    import mlflow

    group, _, _ = stage_name.rpartition("/")
    with _http_defaults(), pipeline_parent(key, group):
        replay_pending(spool_root)  # what an earlier stage could not send, now that the server answers
        with _run(run_name=stage_name, nested=True, log_system_metrics=True) as run:
            mlflow.log_params(flatten("", params))
            mlflow.set_tags({"facectx.stage": stage_name, **(tags or {})})
            with _closed_at_exit(Tracker(run.info.run_id, spool_root / run.info.run_id, stage_name)) as tracker:
                yield tracker


@contextlib.contextmanager
def pipeline_parent(key: str, model: str = ""):
    """Make the pipeline run for `key` (and, given `model`, its nested run for that model: the
    cascade or a compared variant, holding that model's stage runs) the active MLflow run, so runs
    started inside nest under it; yields (client, experiment id). A tracking server that is down
    (or cannot reach its database) is a TrackingUnavailable error here, before anything runs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    client = _connect(uri)
    try:
        experiment_id = _experiment_id(client)
        mlflow.set_experiment(experiment_id=experiment_id)
        parent_id = _pipeline_run(client, experiment_id, key)
        model_id = _model_run(client, experiment_id, parent_id, model) if model else None
    except MlflowException as err:
        if not server_unavailable(err):
            raise
        raise TrackingUnavailable(
            f"MLflow tracking server {redacted(uri)} answers but cannot serve requests "
            f"(is its database up?): {_one_line(err)}; nothing was run"
        ) from err
    with _run(run_id=parent_id):
        if not model_id:
            yield client, experiment_id
            return
        with _run(run_id=model_id, nested=True):
            yield client, experiment_id


def _connect(uri: str | None = None):
    """A client of the tracking server at `uri` (default: tracking_uri()), which MLflow's fluent
    calls (start_run, register_model) then use too. A server that is down is a TrackingUnavailable
    error naming it, here, before anything runs (not minutes of retries, then a stack trace)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _model_run(client, experiment_id: str, parent_id: str, model: str) -> str:
    """The run of one model under the pipeline run (its stages run one after another, so one
    step at a time looks it up or creates it)."""
    found = client.search_runs(
        [experiment_id],
        max_results=1,
        order_by=["attributes.start_time ASC"],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`facectx.model_run` = '{model}'",
    )
    if found:
        return found[0].info.run_id
    return client.create_run(
        experiment_id, run_name=model, tags={"mlflow.parentRunId": parent_id, "facectx.model_run": model}
    ).info.run_id


def _experiment_id(client) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    if tracking_uri().startswith("sqlite:"):
        # Next to the local store, absolute: a temporary working copy must not take the artifacts with it.
        return client.create_experiment(EXPERIMENT, artifact_location=Path("mlartifacts").resolve().as_uri())
    return client.create_experiment(EXPERIMENT)


def _pipeline_run(client, experiment_id: str, key: str) -> str:
    """The parent run for `key`: the earliest one. Steps that start at the same moment (Kubeflow
    runs the cascade's and the variants' first stages in parallel) may each create one; both
    then settle on the earliest, and the other creator deletes its empty duplicate."""

    def earliest():
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}'",
            max_results=1,
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        )
        return found[0].info.run_id if found else None

    existing = earliest()
    if existing:
        return existing
    created = client.create_run(experiment_id, run_name=f"pipeline-{key[:12]}", tags={KEY_TAG: key}).info.run_id
    parent = earliest()
    if parent != created:
        client.delete_run(created)
    return parent


# --------------------------------------------------------------------------- runs of other steps, the registry, models


def use_experiment() -> str:
    """Make the facectx experiment (created as the stage runs create it) the active one; its id."""
    import mlflow

    experiment_id = _experiment_id(_connect())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def step_run(run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """An MLflow run in the facectx experiment for a step that is not training (registration, a
    promotion decision), nested under the active run when there is one (the pipeline run of
    pipeline_parent); yields its run id. log_metrics, log_dict and log_python_model log into it."""
    import mlflow

    experiment_id = use_experiment()
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


class ModelRegistry:
    """MLflow's model registry at the tracking URI: what registry.py's gate needs of it. A server
    that is down is a TrackingUnavailable error naming it when this is made, before anything is
    registered or promoted."""

    def __init__(self):
        self.client = _connect()

    def register(self, model_uri: str, name: str, tags: dict[str, str]) -> int:
        """A new version of registered model `name` (created if new) for `model_uri`; its number."""
        import mlflow

        return int(mlflow.register_model(model_uri, name, tags=tags).version)

    def by_alias(self, name: str, alias: str):
        """The version (an mlflow ModelVersion: .version, .tags, .run_id) of `name` that `alias`
        names, or None when there is none (no such alias, or no such model)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def set_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value)


def python_model_base() -> type:
    """mlflow.pyfunc.PythonModel, the base class of a model MLflow serves (serving.FaceContextModel)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


def invalid_input(message: str) -> Exception:
    """What a served model raises for a bad request: MLflow's scoring server answers 400 with `message`."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def log_python_model(name: str, python_model, input_example, output_example, **options):
    """Log `python_model` (a python_model_base subclass) as an MLflow pyfunc model in the active run
    (one is started if none is), its signature inferred from an example input and the model's output
    for it; options go to mlflow.pyfunc.log_model (artifacts, pip_requirements, code_paths, metadata).
    Returns mlflow's ModelInfo (.model_uri)."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    return mlflow.pyfunc.log_model(
        name=name,
        python_model=python_model,
        input_example=input_example,
        signature=infer_signature(input_example, output_example),
        **options,
    )


# --------------------------------------------------------------------------- a tracking server that fails

SPOOL_DIR, SPOOL_FILE = "mlflow-spool", "spool.json"
# MLflow's HTTP client while a stage runs, unless the environment says otherwise: ~6 s of retries
# (back-off 0, 2, 4 s) ride out a blip; a longer outage is spooled, so waiting longer gains nothing.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROBE_TIMEOUT_S = 5.0


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer, or cannot serve requests (its database is down)."""


def redacted(uri: str) -> str:
    """The URI without a user:password@ part: what logs, messages and spool files may show."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def unreachable_reason(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking server cannot be reached (None when it answers, or for other URIs).
    Any answer counts, even 401 or 403 (its /health needs no credentials) or a TLS handshake this
    probe cannot verify (MLflow's client has its own TLS settings): something is up there."""
    if not uri.startswith(("http://", "https://")):
        return None
    probe = redacted(uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as err:  # refused, unknown host, timed out
        reason = getattr(err, "reason", err)
        return None if isinstance(reason, ssl.SSLError) else _one_line(reason)


def check_reachable(uri: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable (one line naming the URI) when an http(s) tracking server does not answer."""
    uri = uri or tracking_uri()
    reason = unreachable_reason(uri, timeout)
    if reason:
        raise TrackingUnavailable(
            f"MLflow tracking server {redacted(uri)} is not reachable ({reason}): start it, or "
            "point MLFLOW_TRACKING_URI at a running one; nothing was run"
        )


def server_unavailable(err: BaseException) -> bool:
    """Did an MLflow call fail because the server (or its database, or its artifact store) did not
    answer -- no connection, a timeout, or only transient errors (5xx, 429) until the retries ran
    out? Other errors (a bad request) are real, and are raised where they happen."""
    import requests

    kinds: tuple[type, ...] = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
    )
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError  # artifacts sent to S3 directly

        kinds += (BotoConnectionError,)
    except ImportError:
        pass
    seen = set()
    while err is not None and id(err) not in seen:  # MLflow wraps the requests error (as __context__)
        if isinstance(err, kinds):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def _env(values: dict[str, str], only_unset: bool = False):
    """These environment variables for the block (MLflow reads its HTTP settings per request)."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if not (only_unset and saved[name] is not None):
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _http_defaults():
    return _env(HTTP_DEFAULTS, only_unset=True)


@contextlib.contextmanager
def _run(**start_kwargs):
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
            _end_run(run.info.run_id, status)


def _end_run(run_id: str, status: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    down = unreachable_reason(uri, timeout=2.0)
    try:
        # A server known to be down gets one try, not a round of retries per run being ended.
        with _env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}) if down else contextlib.nullcontext():
            mlflow.end_run(status)
    except MlflowException as err:
        if not server_unavailable(err):
            raise
        log.warning(
            "MLflow run %s could not be marked %s: %s does not answer (%s); it shows RUNNING there",
            run_id,
            status,
            redacted(uri),
            down or _one_line(err),
        )
        # end_run stops the run's system-metrics thread only after the server call that failed.
        from mlflow.tracking import fluent

        monitor = getattr(fluent, "run_id_to_system_metrics_monitor", {}).pop(run_id, None)
        if monitor is not None:
            monitor.finish()


def replay_spool(folder: str | os.PathLike) -> bool:
    """Send a stage's spool folder (see Tracker) to its MLflow run: every metric with its step and
    time, the tags, the artifacts, and the run's final status, plus tags naming the outage and the
    folder. True when sent (or sent before); False, with a warning naming the folder, when the
    server still does not answer or refuses it -- the folder is kept either way."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    folder = Path(folder)
    spool = json.loads((folder / SPOOL_FILE).read_text())
    if spool.get("replayed_ms"):
        return True
    uri = tracking_uri()
    reason = unreachable_reason(uri)
    try:
        if reason:
            raise TrackingUnavailable(reason)
        run = json.loads((folder / RUN_FILE).read_text())
        client, run_id = MlflowClient(uri), spool["run_id"]
        metrics = _read_metrics(folder / METRICS_FILE)
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=[Metric(k, v, t, s) for s, t, k, v in metrics[start : start + 1000]])
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(spool["since_ms"] / 1000))
        outage = {
            "facectx.tracking_spool": str(folder.resolve()),
            "facectx.tracking_outage": f"{spool['tracking_uri']} did not answer from {since} "
            f"({spool['error'][:200]}); {len(metrics)} metric values were spooled "
            "and sent later",
        }
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in {**run["tags"], **outage}.items()])
        artifacts = folder / ARTIFACTS
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(run_id, str(artifacts))
        if run["status"] != "RUNNING":
            client.set_terminated(run_id, run["status"], run.get("end_time_ms"))
    except Exception as err:  # the training is done and its records are safe on disk: say where, do not fail
        log.warning(
            "MLflow run %s (stage %s) is missing what was logged after %s stopped answering: it is kept in "
            "%s and is sent by the next stage that tracks to %s, or by tracking.replay_pending(%r) (%s)",
            spool["run_id"],
            spool.get("stage"),
            spool["tracking_uri"],
            folder,
            spool["tracking_uri"],
            str(folder.parent.parent),
            _one_line(err),
        )
        return False
    spool["replayed_ms"] = _now_ms()
    write_json(folder / SPOOL_FILE, spool)
    log.info("sent the spooled records of %s to MLflow run %s", folder, spool["run_id"])
    return True


def replay_pending(root: str | os.PathLike) -> dict[str, bool]:
    """Send every spool under <root>/mlflow-spool/ (root: tracking.folder, or that spool folder
    itself) that was made for the current tracking URI and is not sent yet; {folder: sent}."""
    root = Path(root)
    spools = root if root.name == SPOOL_DIR else root / SPOOL_DIR
    uri = redacted(tracking_uri())
    sent = {}
    for spool_file in sorted(spools.glob(f"*/{SPOOL_FILE}")):
        spool = json.loads(spool_file.read_text())
        if spool.get("replayed_ms") or spool.get("tracking_uri") != uri:
            continue
        sent[str(spool_file.parent)] = replay_spool(spool_file.parent)
    return sent


# --------------------------------------------------------------------------- replaying run folders


def import_folder_runs(root: str | os.PathLike, key: str, tags: dict[str, str]) -> dict:
    """Replay the FolderTracker folders under <root>/<key>/ into MLflow: the pipeline run for
    `key`, a nested run per model holding a nested run per stage (`model/stage_N`), and a nested
    run per other stage (evaluation) — params, tags, every metric with its step and time, artifacts,
    status and times as recorded. Returns {"parent": run id, "runs": {stage name: run id}}."""
    from mlflow.entities import Metric, Param, RunTag

    folder = Path(root) / _safe_name(key)
    client = _connect()
    experiment_id = _experiment_id(client)
    parent = _pipeline_run(client, experiment_id, key)
    if client.get_run(parent).data.tags.get("facectx.source") == "airgap":
        raise ValueError(
            f"the far run {key} is already in MLflow as run {parent} (experiment {EXPERIMENT}): not importing it twice"
        )
    client.set_tag(parent, "facectx.source", "airgap")
    for name, value in tags.items():
        client.set_tag(parent, name, value)
    groups: dict[str, str] = {}
    imported = {}
    for run_file in sorted(folder.rglob(RUN_FILE)):
        run = json.loads(run_file.read_text())
        group, _, _ = run["name"].rpartition("/")
        under = parent
        if group:  # model/stage_N: the stage runs sit under one run per model
            if group not in groups:
                groups[group] = client.create_run(
                    experiment_id,
                    run_name=group,
                    start_time=run["start_time_ms"],
                    tags={"mlflow.parentRunId": parent, "facectx.model_run": group},
                ).info.run_id
            under = groups[group]
        run_id = client.create_run(
            experiment_id,
            run_name=run["name"],
            start_time=run["start_time_ms"],
            tags={"mlflow.parentRunId": under, **run["tags"]},
        ).info.run_id
        system = {f"facectx.system.{k}": str(v) for k, v in run.get("system", {}).items()}
        params = [Param(k, v[:6000]) for k, v in run["params"].items()]
        client.log_batch(run_id, params=params[:100], tags=[RunTag(k, v) for k, v in system.items()])
        for start in range(100, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        metrics = _read_metrics(run_file.parent / METRICS_FILE)
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=[Metric(k, v, t, s) for s, t, k, v in metrics[start : start + 1000]])
        artifacts = run_file.parent / ARTIFACTS
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(run_id, str(artifacts))
        client.set_terminated(run_id, "FINISHED" if run["status"] == "FINISHED" else "FAILED", run.get("end_time_ms"))
        imported[run["name"]] = run_id
    for group_id in groups.values():
        client.set_terminated(group_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return {"parent": parent, "runs": imported}


def _read_metrics(path: Path) -> list[tuple[int, int, str, float]]:
    """(step, timestamp_ms, key, value) rows; a last line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",")
        try:
            rows.append((int(parts[0]), int(parts[1]), parts[2], float(parts[3])))
        except (IndexError, ValueError):
            log.warning("%s: skipping a partial line %r", path, line)
    return rows
