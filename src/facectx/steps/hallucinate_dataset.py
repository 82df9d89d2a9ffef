"""hallucinate-dataset: a whole dataset (folder or s3:// prefix) through a trained model, resumable,
with an MLflow run recording the model version, the counts, the quarantine reasons, the throughput
and a sample grid. The CLI command, the DVC stage `hallucinate` and the Kubeflow components call this."""

from __future__ import annotations

import logging
from pathlib import Path

from facectx import tracking
from facectx.assets import cache_root
from facectx.bulk.model import ResolvedModel, resolve_model
from facectx.bulk.run import DatasetSettings, gather, grid_of, run_shards, start
from facectx.config import Params
from facectx.progress import LOG_LINES, ProgressStyle

log = logging.getLogger(__name__)


def model_cache(params: Params, given: str | None = None) -> Path:
    """Where registry models are downloaded: the argument, else hallucinate.model_cache, else
    <facectx cache root>/models (the root: $FACECTX_CACHE_DIR, else ~/.cache/facectx)."""
    return Path(given or params.hallucinate.model_cache or cache_root() / "models")


def dataset_settings(params: Params) -> DatasetSettings:
    return DatasetSettings(
        params.hallucinate,
        params.crop,
        params.landmarks,
        params.validate,
        params.ingest.extensions,
        params.ingest.max_attempts,
    )


def hallucinate_dataset_step(
    params: Params,
    source: str | None = None,
    out: str | None = None,
    model: str | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
    cache_dir: str | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """source, out, model: params.hallucinate's unless given. Returns the summary and the throughput.
    progress_style: a bar (a person at a terminal) or log lines (facectx/progress.py)."""
    h = params.hallucinate
    source, out, spec = source or h.source, out or h.out, model or h.model
    settings = dataset_settings(params)
    resolved = resolve_model(spec, model_cache(params, cache_dir), tracking_uri)
    listing = start(source, out, resolved, settings)
    stats = run_shards(listing, out, resolved, settings, progress_style=progress_style)
    summary = gather(out, listing)
    report = {**summary, **throughput(stats)}
    log.info("hallucinate-dataset %s -> %s: %s", source, out, report)
    if track and params.tracking.backend == "mlflow" and tracking.mlflow_installed():
        log_run(report, resolved, grid_of(stats["samples"]), (source, out), params.tracking.experiment, tracking_uri)
    return report


def throughput(stats: dict) -> dict:
    wall = stats.get("wall_seconds", 0.0)
    report = {
        "photos_run": stats["photos_run"],
        "shards_run": stats["shards_run"],
        "shards_done_before": stats["shards_done_before"],
        "wall_seconds": round(wall, 3),
        "photos_per_second": round(stats["photos_run"] / wall, 3) if wall > 0 else 0.0,
    }
    report.update({f"seconds_{phase}": round(value, 3) for phase, value in sorted(stats["seconds"].items())})
    return report


def log_run(report: dict, model: ResolvedModel, grid, places: tuple[str, str], experiment, tracking_uri) -> None:
    """One MLflow run: the model version, the counts, the quarantine reasons, the throughput, the grid."""
    source, out = places
    tags = {
        "facectx.stage": "hallucinate-dataset",
        "facectx.model": model.spec,
        "facectx.model_version": model.registry_version or "checkpoint folder",
        "facectx.model_run_id": model.run_id,
        "facectx.data_version": model.data_version,
        "facectx.source": source,
        "facectx.out": out,
    }
    with tracking.step_run("hallucinate-dataset", tags, tracking_uri, experiment):
        numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numbers.update({f"quarantined_{check}": n for check, n in report["quarantined_by_check"].items()})
        tracking.log_metrics(numbers)
        tracking.log_dict(report, "hallucinate_summary.json")
        if grid is not None:
            tracking.log_image(grid, "sample_grid.png")
