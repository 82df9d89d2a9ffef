"""The one module that logs to MLflow (or, without it, to a run folder).

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
import sys
import time
from pathlib import Path
from typing import Iterator

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


RUN_FILE, METRICS_FILE, ARTIFACTS = "run.json", "metrics.csv", "artifacts"


class FolderTracker:
    """What training and evaluation report, into a folder (no MLflow needed):

        run.json      name, params (flattened), tags, status, start/end times, system information
        metrics.csv   step,timestamp_ms,key,value — one line per value, appended as it is logged
        artifacts/    images, dicts and copied folders, at their MLflow artifact paths
    """

    def __init__(self, folder: Path, name: str, params: dict[str, str], tags: dict[str, str]):
        self.folder = Path(folder)
        (self.folder / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        self.run = {"name": name, "params": {k: str(v) for k, v in params.items()}, "tags": dict(tags),
                    "status": "RUNNING", "start_time_ms": _now_ms(), "end_time_ms": None, "system": system_info()}
        self._write_run()
        self._metrics = open(self.folder / METRICS_FILE, "a", buffering=1)  # line-buffered: a kill loses at most a line
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

    def log_dict(self, data: dict, artifact_file: str) -> None:
        write_json(self._artifact(artifact_file), data)

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

    info = {"host": platform.node(), "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def mlflow_installed() -> bool:
    try:
        return importlib.util.find_spec("mlflow") is not None
    except ImportError:  # an import hook that forbids it (the air-gap rehearsal) counts as absent
        return False


def backend(config: TrackingConfig | None) -> str:
    """"mlflow" or "folder": the configured backend, or folder where MLflow is not installed."""
    wanted = config.backend if config else "mlflow"
    if wanted == "mlflow" and not mlflow_installed():
        log.warning("mlflow is not installed: tracking into the run folder %s instead",
                    config.folder if config else "runs")
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
def stage_run(key: str, stage_name: str, params: dict, tags: dict[str, str] | None = None,
              config: TrackingConfig | None = None) -> Iterator[Tracker | FolderTracker]:
    """Open (or reopen) the pipeline run for `key` and a nested run for this stage (MLflow), or a
    stage folder under the pipeline run's folder (the folder backend)."""
    if backend(config) == "folder":
        runner = _folder_stage_run(Path(config.folder if config else "runs"), key, stage_name, params, tags)
    else:
        runner = _mlflow_stage_run(key, stage_name, params, tags)
    with runner as tracker:
        yield tracker


@contextlib.contextmanager
def _folder_stage_run(root: Path, key: str, stage_name: str, params: dict, tags: dict[str, str] | None):
    pipeline = root / _safe_name(key) / "pipeline.json"
    if not pipeline.is_file():
        write_json(pipeline, {"key": key, "experiment": EXPERIMENT, "created_ms": _now_ms()})
    tracker = FolderTracker(folder_stage_path(root, key, stage_name), stage_name, flatten("", params),
                            {"facectx.stage": stage_name, **(tags or {})})
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")


@contextlib.contextmanager
def _mlflow_stage_run(key: str, stage_name: str, params: dict, tags: dict[str, str] | None):
    import mlflow

    group, _, _ = stage_name.rpartition("/")
    with pipeline_parent(key, group) as (client, experiment_id):
        with mlflow.start_run(run_name=stage_name, nested=True, log_system_metrics=True) as run:
            mlflow.log_params(flatten("", params))
            mlflow.set_tags({"facectx.stage": stage_name, **(tags or {})})
            yield Tracker(run.info.run_id)


@contextlib.contextmanager
def pipeline_parent(key: str, model: str = ""):
    """Make the pipeline run for `key` (and, given `model`, its nested run for that model: the
    cascade or a compared variant, holding that model's stage runs) the active MLflow run, so runs
    started inside nest under it; yields (client, experiment id)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment_id = _experiment_id(client)
    mlflow.set_experiment(experiment_id=experiment_id)
    parent_id = _pipeline_run(client, experiment_id, key)
    with mlflow.start_run(run_id=parent_id):
        if not model:
            yield client, experiment_id
            return
        with mlflow.start_run(run_id=_model_run(client, experiment_id, parent_id, model), nested=True):
            yield client, experiment_id


def _model_run(client, experiment_id: str, parent_id: str, model: str) -> str:
    """The run of one model under the pipeline run (its stages run one after another, so one
    step at a time looks it up or creates it)."""
    found = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
                               filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`facectx.model_run` = '{model}'")
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=model,
                             tags={"mlflow.parentRunId": parent_id, "facectx.model_run": model}).info.run_id


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


# --------------------------------------------------------------------------- replaying run folders


def import_folder_runs(root: str | os.PathLike, key: str, tags: dict[str, str]) -> dict:
    """Replay the FolderTracker folders under <root>/<key>/ into MLflow: the pipeline run for
    `key`, a nested run per model holding a nested run per stage (`model/stage_N`), and a nested
    run per other stage (evaluation) — params, tags, every metric with its step and time, artifacts,
    status and times as recorded. Returns {"parent": run id, "runs": {stage name: run id}}."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    folder = Path(root) / _safe_name(key)
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment_id = _experiment_id(client)
    parent = _pipeline_run(client, experiment_id, key)
    if client.get_run(parent).data.tags.get("facectx.source") == "airgap":
        raise ValueError(f"the far run {key} is already in MLflow as run {parent} (experiment {EXPERIMENT}): not importing it twice")
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
                groups[group] = client.create_run(experiment_id, run_name=group, start_time=run["start_time_ms"],
                                                  tags={"mlflow.parentRunId": parent, "facectx.model_run": group}).info.run_id
            under = groups[group]
        run_id = client.create_run(experiment_id, run_name=run["name"], start_time=run["start_time_ms"],
                                   tags={"mlflow.parentRunId": under, **run["tags"]}).info.run_id
        system = {f"facectx.system.{k}": str(v) for k, v in run.get("system", {}).items()}
        params = [Param(k, v[:6000]) for k, v in run["params"].items()]
        client.log_batch(run_id, params=params[:100], tags=[RunTag(k, v) for k, v in system.items()])
        for start in range(100, len(params), 100):
            client.log_batch(run_id, params=params[start:start + 100])
        metrics = _read_metrics(run_file.parent / METRICS_FILE)
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=[Metric(k, v, t, s) for s, t, k, v in metrics[start:start + 1000]])
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
