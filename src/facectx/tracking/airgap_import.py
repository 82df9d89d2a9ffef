"""Replaying run folders (the folder backend's, brought back from an air-gapped node by `facectx
airgap import`) into MLflow: the pipeline run, a run per model holding its stage runs, a run per
other stage, with every record as it was made."""

from __future__ import annotations

import json
import os
from pathlib import Path

from facectx.tracking import settings
from facectx.tracking.folder import ARTIFACTS, METRICS_FILE, PIPELINE_FILE, RUN_FILE, read_metrics, safe_name
from facectx.tracking.mlflow_runs import connect
from facectx.tracking.shared_runs import experiment_id_of, pipeline_run

# mlflow is imported inside the functions: it is optional where runs are tracked into folders
# (an air-gapped node), and facectx.tracking, which imports this module, must load there.


def import_folder_runs(
    root: str | os.PathLike,
    key: str,
    tags: dict[str, str],
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> dict:
    """Replay the FolderTracker folders under <root>/<key>/ into MLflow (tracking_uri: default
    settings.tracking_uri(); experiment: default the one the far run recorded): the pipeline run for `key`, a
    nested run per model holding a nested run per stage (`model/stage_N`), and a nested run per
    other stage (evaluation) — params, tags, every metric with its step and time, artifacts, status
    and times as recorded. Returns {"parent": run id, "runs": {stage name: run id}}."""
    uri = settings.tracking_uri(tracking_uri)
    experiment = settings.experiment_name(experiment or _recorded_experiment(Path(root) / safe_name(key)))
    client = connect(uri)
    experiment_id = experiment_id_of(client, uri, experiment)
    parent = pipeline_run(client, experiment_id, key)
    if client.get_run(parent).data.tags.get("facectx.source") == "airgap":
        raise ValueError(
            f"the far run {key} is already in MLflow as run {parent} (experiment {experiment}): not importing it twice"
        )
    client.set_tag(parent, "facectx.source", "airgap")
    for name, value in tags.items():
        client.set_tag(parent, name, value)
    groups: dict[str, str] = {}
    imported = {}
    for run_file in sorted((Path(root) / safe_name(key)).rglob(RUN_FILE)):
        run = json.loads(run_file.read_text())
        under = _model_group(client, experiment_id, parent, run, groups)
        imported[run["name"]] = _import_run(client, experiment_id, under, run, run_file.parent)
    for group_id in groups.values():
        client.set_terminated(group_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return {"parent": parent, "runs": imported}


def _recorded_experiment(folder: Path) -> str | None:
    """The experiment the folder backend recorded for this pipeline run (its tracking.experiment)."""
    pipeline_file = folder / PIPELINE_FILE
    return json.loads(pipeline_file.read_text()).get("experiment") if pipeline_file.is_file() else None


def _model_group(client, experiment_id: str, parent: str, run: dict, groups: dict[str, str]) -> str:
    """The run a folder run nests under: its model's run for model/stage_N (made once per model,
    kept in `groups`), else the pipeline run."""
    group, _, _ = run["name"].rpartition("/")
    if not group:
        return parent
    if group not in groups:
        groups[group] = client.create_run(
            experiment_id,
            run_name=group,
            start_time=run["start_time_ms"],
            tags={"mlflow.parentRunId": parent, "facectx.model_run": group},
        ).info.run_id
    return groups[group]


def _import_run(client, experiment_id: str, under: str, run: dict, folder: Path) -> str:
    """One run folder as a finished (or failed) MLflow run nested under `under`; its id."""
    from mlflow.entities import Metric, Param, RunTag

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
    metrics = read_metrics(folder / METRICS_FILE)
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=[Metric(k, v, t, s) for s, t, k, v in metrics[start : start + 1000]])
    artifacts = folder / ARTIFACTS
    if artifacts.is_dir() and any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    client.set_terminated(run_id, "FINISHED" if run["status"] == "FINISHED" else "FAILED", run.get("end_time_ms"))
    return run_id
