"""Scores of one method's outputs: per-photo metrics, the networks' features (real photos' cached),
and the two-sample realism test."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.evaluation.metrics import PER_PHOTO
from facectx.evaluation.outputs import batched
from facectx.evaluation.photo_sets import TestSet
from facectx.evaluation.two_sample import two_sample_auc

log = logging.getLogger("facectx.evaluation.evaluate")  # the name evaluate's log lines have always carried


def network_features(net, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
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
    features = network_features(net, images, batch)
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
    # Each lambda runs within its iteration (batched calls it at once), so B023's late binding is moot.
    per_photo = {
        name: batched(lambda s: fn(output[s], test.target[s], test.mask[size][s], test.valid[s]), len(output), batch)  # noqa: B023
        for name, fn in PER_PHOTO.items()
    }
    per_photo["identity_match"] = (_unit_rows(output_features) * _unit_rows(target_features)).sum(1)
    if threshold is not None:
        per_photo["verified"] = (per_photo["identity_match"] >= threshold).astype(float)
    per_photo["perceptual"] = batched(
        lambda s: perceptual.perceptual_distance(output[s], test.target[s]), len(output), batch
    )
    frame = pd.DataFrame(per_photo)
    frame.insert(0, "relative_path", test.index.relative_path.to_numpy())
    return frame


def realism(real: np.ndarray, real_identities: np.ndarray, other: np.ndarray, other_identities: np.ndarray) -> dict:
    """The two-sample AUC as metrics (with the photos a side), or none when there are too few
    photos for five folds: no figure rather than a noisy one."""
    try:
        found = two_sample_auc(real, real_identities, other, other_identities)
    except ValueError as err:
        log.warning("evaluate: no two-sample test: %s", err)
        return {}
    return {"c2st_auc": found["auc"], "c2st_auc_sd": found["auc_sd"], "c2st_n_per_side": float(found["n_per_side"])}
