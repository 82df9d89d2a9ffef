"""evaluate: every method on the same test photos, measured the way the paper measures.

Methods: the classical baselines, and every trained model given (cascade, ProGAN variant,
ablations). Per photo: identity match (cosine of an independent matcher's descriptors of the
original and the output frame, whole frame with its context), verified (match at or above a
threshold calibrated the same way on LFW pairs), SSIM and PSNR over the whole frame and over the
hallucinated region, a perceptual distance. Per method: the Fréchet distance of output features
to real test photos — and, as the yardstick that shows it discriminates, real validation photos
against real test photos.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.assets import cache_root
from facectx.config import EvaluateConfig
from facectx.evaluation.baselines import BASELINES
from facectx.evaluation.carried import carried_rows
from facectx.evaluation.lpips import LpipsDistance
from facectx.evaluation.metrics import frechet_distance, within_photo
from facectx.evaluation.networks import InceptionFeatures, make_networks
from facectx.evaluation.outputs import method_outputs
from facectx.evaluation.photo_sets import TestSet, load_split, mean_training_frame
from facectx.evaluation.report import write_report
from facectx.evaluation.scoring import cached_features, network_features, realism, score_method
from facectx.evaluation.two_sample import FOLDS, L2, identity_halves
from facectx.inference import Hallucinator
from facectx.io_utils import write_json, write_parquet
from facectx.progress import LOG_LINES, Progress, ProgressStyle

# Importers take these from here: the evaluation's entry points, wherever they now live.
__all__ = ["REAL_VS_REAL", "TestSet", "evaluate", "load_split", "mean_training_frame", "method_outputs", "score_method"]

REAL_VS_REAL = "real photos (val vs test)"

log = logging.getLogger(__name__)


def evaluate(
    prepared_dir: str | os.PathLike,
    models: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    config: EvaluateConfig,
    calibration: dict | None = None,
    nets=None,
    device: str = "cpu",
    reference: dict | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """calibration: the matcher's LFW-pair calibration (threshold, auc, ...); without it no
    verification score is reported. reference: the metrics.json of an evaluation of the same test
    photos with the same networks and threshold made elsewhere (an air-gap pack's, made at home):
    its rows (the baselines', real vs real) are carried over instead of being computed again.
    progress_style: a bar or log lines (facectx/progress.py)."""
    out_dir = Path(out_dir)
    threshold = calibration["threshold"] if calibration else None
    test = load_split(prepared_dir, "test", config.max_photos)
    nets = nets or make_networks(config.matcher, device)
    # Perceptual distance: standard LPIPS when its weights are configured, else the labelled substitute.
    perceptual = (
        LpipsDistance(config.lpips_backbone_weights, config.lpips_linear_weights, device)
        if config.lpips_backbone_weights
        else nets
    )
    # The Fréchet distance: standard FID when InceptionV3 weights are configured, else features
    # of the matcher's network (labelled non-standard).
    fid_net = InceptionFeatures(config.inception_weights, device) if config.inception_weights else nets
    facts = _facts(test, nets, fid_net, perceptual, threshold, config)
    carried = carried_rows(reference, facts) if reference is not None else {}
    methods = _methods(prepared_dir, models, config, device, baselines=config.baselines and not carried)
    # Where the frame ran past the photo every output shows the target's black padding: no metric
    # rewards or punishes what was never in the photo (the pixel metrics also leave it out).
    outputs = {
        name: within_photo(output, test.target, test.valid)
        for name, output in method_outputs(methods, test, config.batch_size, progress_style).items()
    }
    val = None if carried else load_split(prepared_dir, "val", config.max_photos)
    log.info(
        "evaluate: features of the real photos (%d test, %d validation)",
        len(test.target),
        len(val.target) if val else 0,
    )
    real = _real_features(nets, fid_net, test, val, config)
    with Progress(len(test.target) * len(outputs), "evaluate: scoring", "photo", progress_style) as progress:
        per_photo, summary = _score_methods(outputs, test, nets, perceptual, threshold, config, real, progress)
    summary = _with_yardstick(summary, carried, real, val)
    result = _metrics(test, nets, facts, calibration, summary)
    result["carried_rows"] = sorted(carried)  # measured elsewhere (reference), not in this run's outputs
    # Which weights each trained model's row scored (running, standing or ema: inference.load_generator).
    result["weights"] = {name: method.weights for name, method in methods.items() if isinstance(method, Hallucinator)}
    write_json(out_dir / "metrics.json", result)
    write_parquet(out_dir / "per_photo.parquet", pd.concat(per_photo, ignore_index=True))
    write_report(out_dir, result, outputs, test, config.grid_photos)
    return result


def _with_yardstick(summary: dict, carried: dict, real: _RealFeatures, val: TestSet | None) -> dict:
    """The rows in their usual order: baselines, models, then the yardstick (validation photos,
    other identities again, in a method's place); the carried rows where there are any."""
    if carried:
        summary = {**{k: v for k, v in carried.items() if k != REAL_VS_REAL}, **summary}
        return {**summary, REAL_VS_REAL: carried[REAL_VS_REAL]}
    yardstick = {
        "fd": frechet_distance(real.fd_val, real.fd_test),
        **realism(*real.real_half, real.fd_val, val.index.identity.to_numpy()),
    }
    return {**summary, REAL_VS_REAL: yardstick}


def _methods(
    prepared_dir: str | os.PathLike, models: dict, config: EvaluateConfig, device: str, baselines: bool
) -> dict:
    """The methods by name: the classical baselines (when asked for), then the trained models,
    each once per evaluate.weights entry: the first under the model's own name (the row the
    registry gates), each further one as NAME@CHOICE. A choice that resolves to weights already
    scored (auto) adds no row; one the checkpoint lacks is an error naming it."""
    methods = {}
    if baselines:
        mean_frame = mean_training_frame(prepared_dir)
        methods.update({name: make(mean_frame) for name, make in BASELINES.items()})
    for name, path in models.items():
        scored = []
        for choice in config.weights:
            model = Hallucinator(path, device, choice)
            if model.weights not in scored:
                methods[f"{name}@{model.weights}" if scored else name] = model
                scored.append(model.weights)
    return methods


@dataclass
class _RealFeatures:
    """The real photos' side of every comparison, computed once for all methods."""

    identity: np.ndarray  # the matcher's descriptors of the test photos
    fid_net: object  # the network of the Fréchet distance and the two-sample test
    fd_test: np.ndarray
    fd_val: np.ndarray | None  # None: no validation photos (the real-vs-real row is carried)
    identities: np.ndarray  # the test photos' identities
    real_side: np.ndarray  # which test photos are the real side of the two-sample test
    real_half: tuple[np.ndarray, np.ndarray]  # their features and identities


def _real_features(nets, fid_net, test: TestSet, val: TestSet | None, config: EvaluateConfig) -> _RealFeatures:
    cache = cache_root() / "eval_stats"
    real_test = cached_features(nets, test.target, config.batch_size, cache, "test")
    fid_test = cached_features(fid_net, test.target, config.batch_size, cache, "test")["fd"]
    fid_val = None if val is None else cached_features(fid_net, val.target, config.batch_size, cache, "val")["fd"]

    # The two-sample test: real test photos of one half of the identities against a method's
    # outputs for the other half (both through the same feature network and code path).
    identities = test.index.identity.to_numpy()
    real_side = identity_halves(identities)
    real_half = (fid_test[real_side], identities[real_side])
    return _RealFeatures(real_test["identity"], fid_net, fid_test, fid_val, identities, real_side, real_half)


def _score_methods(
    outputs: dict[str, np.ndarray],
    test: TestSet,
    nets,
    perceptual,
    threshold: float | None,
    config: EvaluateConfig,
    real: _RealFeatures,
    progress: Progress,
) -> tuple[list[pd.DataFrame], dict[str, dict]]:
    """Each method's per-photo scores (tagged with its name) and its summary row."""
    per_photo, summary = [], {}
    for number, (name, output) in enumerate(outputs.items(), start=1):
        log.info("evaluate: scoring %s (%d of %d) on %d photos", name, number, len(outputs), len(output))
        progress.figures(method=name)
        features = network_features(nets, output, config.batch_size)
        frame = score_method(
            output, features["identity"], test, perceptual, threshold, config.batch_size, real.identity
        )
        per_photo.append(frame.assign(method=name))
        fid_features = (
            network_features(real.fid_net, output, config.batch_size)["fd"]
            if config.inception_weights
            else features["fd"]
        )
        summary[name] = {
            **{k: float(v) for k, v in frame.drop(columns="relative_path").mean().items()},
            "fd": frechet_distance(fid_features, real.fd_test),
            **realism(*real.real_half, fid_features[~real.real_side], real.identities[~real.real_side]),
        }
        progress.advance(len(output))
    return per_photo, summary


def _facts(test: TestSet, nets, fid_net, perceptual, threshold: float | None, config: EvaluateConfig) -> dict:
    """What makes two evaluations' rows comparable: the same photos, networks and threshold."""
    return {
        # Which test photos: versions are only compared on the same ones (registry gate).
        "test_set": hashlib.sha256("\n".join(test.index.relative_path).encode()).hexdigest()[:16],
        "matcher": nets.name,
        "fd_network": f"standard FID: {fid_net.fd_name}" if config.inception_weights else fid_net.fd_name,
        "perceptual_network": perceptual.perceptual_name,
        "threshold": threshold,
    }


def _metrics(test: TestSet, nets, facts: dict, calibration: dict | None, summary: dict) -> dict:
    """metrics.json: what was measured, on which photos, with which networks, and every method's row."""
    return {
        "photos": int(len(test.target)),
        **facts,
        "matcher_independent": nets.independent,
        "two_sample_test": {
            "features": facts["fd_network"],
            "classifier": f"standardised logistic regression (L2 {L2})",
            "folds": FOLDS,
            "folds_grouped_by": "identity",
            "n_per_side": summary[REAL_VS_REAL].get("c2st_n_per_side"),
            "sides": "real test photos of half the identities vs outputs for the other half's photos",
        },
        "calibration": {k: calibration[k] for k in ("threshold", "auc", "tpr_at_far", "pairs") if k in calibration}
        if calibration
        else None,
        "methods": summary,
    }
