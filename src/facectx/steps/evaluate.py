"""evaluate: the trained models and the baselines scored on the test split, the report written
and logged to MLflow."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from facectx import tracking
from facectx.checkpoint import training_identity
from facectx.config import Params
from facectx.evaluation.evaluate import evaluate
from facectx.evaluation.lfw_calibration import DEV_TRAIN_PAIRS, lfw_pair_calibration
from facectx.evaluation.networks import WholeFrameIdentity, make_networks
from facectx.layout import CASCADE
from facectx.progress import LOG_LINES, ProgressStyle
from facectx.steps.run_key import local_pipeline_key
from facectx.tensors import resolve_device


def evaluate_step(
    params: Params,
    prepared_dir: str | os.PathLike,
    raw_dir: str | os.PathLike | None,
    models: dict[str, str],
    out_dir: str | os.PathLike,
    calibration: dict | None = None,
    run_name: str = CASCADE,
    stage_name: str = "evaluate",
    pipeline_run: str | None = None,
    tracking_uri: str | None = None,
    data_tags: dict[str, str] | None = None,
    reference: dict | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """Score baselines and models on the test split, write the report, log it to MLflow (its run
    tagged with data_tags: a Kubeflow run's data version). progress_style: a bar (a person at a
    terminal) or log lines saying which method is run or scored, on how many photos, and the time left.

    The verification threshold is calibrated on LFW's DevTrain pairs under raw_dir (needs the
    photos and the landmark detector), unless a calibration made elsewhere is given. reference:
    an evaluation of the same photos made elsewhere whose rows are carried (evaluation.carried)."""
    config = params.evaluate
    device = resolve_device(config.device, "evaluate.device")
    nets = make_networks(config.matcher, device, params.assets)
    if calibration is None and raw_dir is not None:
        calibration = matcher_calibration(params, raw_dir, nets)
    key = pipeline_run or local_pipeline_key(run_name, training_identity(params, prepared_dir))
    with tracking.stage_run(
        key,
        stage_name,
        {"evaluate": dataclasses.asdict(config), "models": models},
        lineage_tags=data_tags,
        config=params.tracking,
        tracking_uri=tracking_uri,
    ) as tracker:
        result = evaluate(prepared_dir, models, out_dir, config, calibration, nets, device, reference, progress_style)
        for method, values in result["methods"].items():
            tracker.log_metrics({f"{_metric_key(method)}.{k}": v for k, v in values.items()}, step=0)
        tracker.log_artifacts(out_dir)
    return result


def matcher_calibration(params: Params, raw_dir: str | os.PathLike, nets) -> dict | None:
    """The matcher's verification threshold at 1% false accepts, from LFW's DevTrain pairs under
    raw_dir/split_lists (the whole-frame view evaluation scores); None when the pairs are absent.
    Needs the photos and the landmark detector, so an air-gapped run takes it from its pack."""
    if not (Path(raw_dir) / DEV_TRAIN_PAIRS).is_file():
        return None
    return lfw_pair_calibration(
        raw_dir,
        WholeFrameIdentity(nets, params.crop),
        params.landmarks,
        max_pairs=params.evaluate.calibration_pairs or None,
        pairs_file=DEV_TRAIN_PAIRS,
    )


def _metric_key(method: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in method)
