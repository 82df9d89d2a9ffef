"""hallucinate-dataset split for Kubeflow (pipelines/hallucinate.py): start (list + stamp, once) ->
one step per group of shards (shard i belongs to group i % groups, on its own GPU node) -> gather.
The same code as the single-machine command (facectx.bulk.run); a retried or re-submitted step
redoes only its unfinished shards."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pandas as pd
from PIL import Image

from facectx import tracking
from facectx.bulk.model import resolve_model
from facectx.bulk.output import MANIFEST, open_output
from facectx.bulk.run import gather, read_started, run_shards, start
from facectx.config import Params
from facectx.steps.hallucinate_dataset import dataset_settings, log_run, model_cache, throughput


def start_step(
    params: Params, source: str, out: str, model: str, groups: int, tracking_uri=None, cache_dir=None
) -> list:
    """List and stamp OUT; returns the group numbers that have shards (at most `groups`)."""
    if groups < 1:
        raise ValueError(f"parallelism {groups}: give 1 or more GPU steps")
    resolved = resolve_model(model, model_cache(params, cache_dir), tracking_uri)
    listing = start(source, out, resolved, dataset_settings(params))
    return list(range(min(groups, listing.shard_count)))


def group_step(
    params: Params, source: str, out: str, model: str, group: int, groups: int, tracking_uri=None, cache_dir=None
) -> dict:
    """Every unfinished shard of one group; returns its throughput (photos, seconds per phase)."""
    settings = dataset_settings(params)
    resolved = resolve_model(model, model_cache(params, cache_dir), tracking_uri)
    stats = run_shards(read_started(source, out, settings), out, resolved, settings, group, groups)
    return throughput(stats)


def gather_step(
    params: Params, source: str, out: str, model: str, group_reports: list[dict], tracking_uri=None, cache_dir=None
) -> dict:
    """The shards' tables into one, and the MLflow run (throughput: the groups', which ran side by side)."""
    settings = dataset_settings(params)
    resolved = resolve_model(model, model_cache(params, cache_dir), tracking_uri)
    summary = gather(out, read_started(source, out, settings))
    report = {**summary, **combined_throughput(group_reports)}
    if params.tracking.backend == "mlflow" and tracking.mlflow_installed():
        grid = frames_grid(out, params.hallucinate.sample_grid_photos)
        log_run(report, resolved, grid, (source, out), params.tracking.experiment, tracking_uri)
    return report


def combined_throughput(reports: list[dict]) -> dict:
    total = Counter()
    for report in reports:
        total.update({k: v for k, v in report.items() if k.startswith(("seconds_", "photos_run", "shards_"))})
    wall = max((r.get("wall_seconds", 0.0) for r in reports), default=0.0)
    photos = total["photos_run"]
    return {**total, "groups": len(reports), "wall_seconds": wall, "photos_per_second": photos / wall if wall else 0.0}


def frames_grid(out: str, count: int) -> np.ndarray | None:
    """The first `count` frames written, 4 a row (what the MLflow run shows of a Kubeflow run)."""
    output = open_output(out)
    manifest = pd.read_parquet(io.BytesIO(output.read_bytes(MANIFEST)))
    frames = [
        np.asarray(Image.open(io.BytesIO(output.read_bytes(p))).convert("RGB")) for p in manifest.frame_path[:count]
    ]
    if not frames:
        return None
    frames += [np.zeros_like(frames[0])] * (-len(frames) % 4)
    return np.concatenate([np.concatenate(frames[i : i + 4], axis=1) for i in range(0, len(frames), 4)], axis=0)
