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
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.assets import cache_root
from facectx.config import EvaluateConfig
from facectx.data.shards import SplitShards
from facectx.evaluation.baselines import BASELINES
from facectx.evaluation.lpips import LpipsDistance
from facectx.evaluation.metrics import PER_PHOTO, frechet_distance, within_photo
from facectx.evaluation.networks import InceptionFeatures, make_networks
from facectx.evaluation.report import write_report
from facectx.evaluation.two_sample import FOLDS, L2, identity_halves, two_sample_auc
from facectx.inference import Hallucinator
from facectx.io_utils import write_json, write_parquet

log = logging.getLogger(__name__)
REAL_VS_REAL = "real photos (val vs test)"


@dataclass
class TestSet:
    target: np.ndarray  # (N, 128, 128, 3) uint8
    masked: dict[int, np.ndarray]
    mask: dict[int, np.ndarray]
    landmarks: np.ndarray  # (N, 68, 2)
    index: pd.DataFrame
    valid: np.ndarray  # (N, 128, 128) uint8: 255 inside the photo, 0 where the crop ran past its edge


def load_split(prepared_dir: str | os.PathLike, split: str, max_rows: int = 0, seed: int = 0) -> TestSet:
    """A split's photos: every one, or `max_rows` spread over identities (`subset_rows`). The seed
    is fixed so that every method, every run and the registry gate score the same photos."""
    shards = SplitShards(prepared_dir, split)
    rows = shards.subset(max_rows, seed)  # fancy indexing already copies: np.asarray adds no second copy
    load = lambda kind, r=None: np.asarray(shards.array(kind, r)[rows])  # noqa: E731
    size = shards.frame_size
    return TestSet(
        target=load("target", size),
        masked={r: load("masked", r) for r in shards.resolutions},
        mask={r: load("mask", r) for r in shards.resolutions},
        landmarks=load("landmarks"),
        index=shards.index().iloc[rows],
        valid=load("valid", size),
    )


def mean_training_frame(prepared_dir: str | os.PathLike, rows: int = 2000) -> np.ndarray:
    """The mean of a sample of training frames spread over identities (not the first rows: a few surnames)."""
    shards = SplitShards(prepared_dir, "train")
    frames = shards.array("target", shards.frame_size)[shards.subset(rows, seed=0)]
    return np.asarray(frames, dtype=np.float64).mean(0).round().astype(np.uint8)


def _batched(fn, n: int, batch: int) -> np.ndarray:
    return np.concatenate([fn(slice(i, min(n, i + batch))) for i in range(0, n, batch)])


_BASELINE_JOB: tuple = ()  # (method, masked, hard mask), set before the pool forks: the workers inherit it


def _baseline_slice(rows: slice) -> np.ndarray:
    method, masked, hard_mask = _BASELINE_JOB
    return method(masked[rows], hard_mask[rows])


def method_outputs(methods: dict, test: TestSet, batch: int) -> dict[str, np.ndarray]:
    """Every method's uint8 outputs. The classical baselines run on the CPU, one photo at a time
    (biharmonic ~0.15 s a photo), so they are spread over every core: on a 16-core GPU machine the
    whole LFW test split's baselines take seconds, not minutes."""
    global _BASELINE_JOB
    size, n = test.target.shape[1], len(test.target)
    hard_mask = (test.mask[size] > 127).astype(np.uint8)
    workers = min(len(os.sched_getaffinity(0)), max(1, n // batch))
    outputs = {}
    for name, method in methods.items():
        log.info("evaluate: running %s on %d photos", name, n)
        if isinstance(method, Hallucinator):
            # The lambdas below run within their loop iteration (_batched calls them at once): B023 is moot.
            outputs[name] = _batched(
                lambda s: method.from_pyramid(  # noqa: B023
                    {r: v[s] for r, v in test.masked.items()},
                    {r: v[s] for r, v in test.mask.items()},
                ),
                n,
                batch,
            )
        elif workers == 1:
            outputs[name] = _batched(lambda s: method(test.masked[size][s], hard_mask[s]), n, batch)  # noqa: B023
        else:
            # fork: the workers share the arrays and the method (a closure) without pickling them;
            # they never touch torch, so a CUDA context in this process does not matter.
            _BASELINE_JOB = (method, test.masked[size], hard_mask)
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    outputs[name] = np.concatenate(
                        pool.map(_baseline_slice, [slice(i, min(n, i + batch)) for i in range(0, n, batch)])
                    )
            finally:  # the job's arrays must not outlive the call in this process
                _BASELINE_JOB = ()
    return outputs


def _features(net, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """The network's frame features ({"identity": ..., "fd": ...}, or just "fd"), batch by batch."""
    parts = [net.frame_features(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def cached_features(net, images: np.ndarray, batch: int, cache_dir: Path, label: str) -> dict[str, np.ndarray]:
    """Features of real photos, cached under a hash of the pixels and the network's feature names."""
    key = hashlib.sha256(images.tobytes() + f"{net.name}|{net.fd_name}".encode()).hexdigest()[:20]
    path = cache_dir / f"real_features_{label}_{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return dict(stored)
    features = _features(net, images, batch)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **features)
    os.replace(tmp, path)
    return features


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def score_method(
    output: np.ndarray,
    output_features: np.ndarray,
    test: TestSet,
    perceptual,
    threshold: float | None,
    batch: int,
    target_features: np.ndarray,
) -> pd.DataFrame:
    """Per-photo metrics. Identity is the matcher's cosine over the WHOLE frame (original vs
    output): a face crop would mostly see the pasted-back face and score high whatever the context."""
    size = test.target.shape[1]
    # Each lambda runs within its iteration (_batched calls it at once), so B023's late binding is moot.
    per_photo = {
        name: _batched(lambda s: fn(output[s], test.target[s], test.mask[size][s], test.valid[s]), len(output), batch)  # noqa: B023
        for name, fn in PER_PHOTO.items()
    }
    per_photo["identity_match"] = (_unit_rows(output_features) * _unit_rows(target_features)).sum(1)
    if threshold is not None:
        per_photo["verified"] = (per_photo["identity_match"] >= threshold).astype(float)
    per_photo["perceptual"] = _batched(
        lambda s: perceptual.perceptual_distance(output[s], test.target[s]), len(output), batch
    )
    frame = pd.DataFrame(per_photo)
    frame.insert(0, "relative_path", test.index.relative_path.to_numpy())
    return frame


def _realism(real: np.ndarray, real_identities: np.ndarray, other: np.ndarray, other_identities: np.ndarray) -> dict:
    """The two-sample AUC as metrics (with the photos a side), or none when there are too few
    photos for five folds: no figure rather than a noisy one."""
    try:
        found = two_sample_auc(real, real_identities, other, other_identities)
    except ValueError as err:
        log.warning("evaluate: no two-sample test: %s", err)
        return {}
    return {"c2st_auc": found["auc"], "c2st_auc_sd": found["auc_sd"], "c2st_n_per_side": float(found["n_per_side"])}


def evaluate(
    prepared_dir: str | os.PathLike,
    models: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    config: EvaluateConfig,
    calibration: dict | None = None,
    nets=None,
    device: str = "cpu",
) -> dict:
    """calibration: the matcher's LFW-pair calibration (threshold, auc, ...); without it no
    verification score is reported."""
    out_dir = Path(out_dir)
    threshold = calibration["threshold"] if calibration else None
    test = load_split(prepared_dir, "test", config.max_photos)
    val = load_split(prepared_dir, "val", config.max_photos)
    nets = nets or make_networks(config.matcher, device)
    # Perceptual distance: standard LPIPS when its weights are configured, else the labelled substitute.
    perceptual = (
        LpipsDistance(config.lpips_backbone_weights, config.lpips_linear_weights, device)
        if config.lpips_backbone_weights
        else nets
    )
    methods = {}
    if config.baselines:
        mean_frame = mean_training_frame(prepared_dir)
        methods.update({name: make(mean_frame) for name, make in BASELINES.items()})
    methods.update({name: Hallucinator(path, device) for name, path in models.items()})
    # Where the frame ran past the photo every output shows the target's black padding: no metric
    # rewards or punishes what was never in the photo (the pixel metrics also leave it out).
    outputs = {
        name: within_photo(output, test.target, test.valid)
        for name, output in method_outputs(methods, test, config.batch_size).items()
    }

    cache = cache_root() / "eval_stats"
    real_test = cached_features(nets, test.target, config.batch_size, cache, "test")
    # The Fréchet distance: standard FID when InceptionV3 weights are configured, else features
    # of the matcher's network (labelled non-standard).
    fid_net = InceptionFeatures(config.inception_weights, device) if config.inception_weights else nets
    fid_test = cached_features(fid_net, test.target, config.batch_size, cache, "test")["fd"]
    fid_val = cached_features(fid_net, val.target, config.batch_size, cache, "val")["fd"]

    # The two-sample test: real test photos of one half of the identities against a method's
    # outputs for the other half (both through the same feature network and code path).
    identities = test.index.identity.to_numpy()
    real_side = identity_halves(identities)
    real_half = (fid_test[real_side], identities[real_side])

    per_photo, summary = [], {}
    for name, output in outputs.items():
        features = _features(nets, output, config.batch_size)
        frame = score_method(
            output, features["identity"], test, perceptual, threshold, config.batch_size, real_test["identity"]
        )
        per_photo.append(frame.assign(method=name))
        fid_features = (
            _features(fid_net, output, config.batch_size)["fd"] if config.inception_weights else features["fd"]
        )
        summary[name] = {
            **{k: float(v) for k, v in frame.drop(columns="relative_path").mean().items()},
            "fd": frechet_distance(fid_features, fid_test),
            **_realism(*real_half, fid_features[~real_side], identities[~real_side]),
        }
    # The yardstick row: validation photos (other identities again) in a method's place.
    summary[REAL_VS_REAL] = {
        "fd": frechet_distance(fid_val, fid_test),
        **_realism(*real_half, fid_val, val.index.identity.to_numpy()),
    }
    fd_network = f"standard FID: {fid_net.fd_name}" if config.inception_weights else fid_net.fd_name
    result = {
        "photos": int(len(test.target)),
        # Which test photos: versions are only compared on the same ones (registry gate).
        "test_set": hashlib.sha256("\n".join(test.index.relative_path).encode()).hexdigest()[:16],
        "matcher": nets.name,
        "matcher_independent": nets.independent,
        "fd_network": fd_network,
        "perceptual_network": perceptual.perceptual_name,
        "threshold": threshold,
        "two_sample_test": {
            "features": fd_network,
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
    write_json(out_dir / "metrics.json", result)
    write_parquet(out_dir / "per_photo.parquet", pd.concat(per_photo, ignore_index=True))
    write_report(out_dir, result, outputs, test, config.grid_photos)
    return result
