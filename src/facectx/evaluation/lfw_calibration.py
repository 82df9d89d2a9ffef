"""Calibration of the independent matcher (facectx.evaluation.matcher) on LFW's pairs.

Scores same- and different-person pairs of LFW photos with the matcher and picks the threshold at
which at most 1% of different-person pairs are accepted, with the ROC figures that go with it. The
result is cached as JSON, so the photos are read and described once per matcher and landmarker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facectx.assets import cache_root
from facectx.config import LandmarkConfig
from facectx.data.landmarks import make_landmarker
from facectx.evaluation.matcher import FaceResMatcher
from facectx.io_utils import write_json

# ---------------------------------------------------------------------------------------------
# Scores and calibration


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays -> (N,)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine: shapes differ, {a.shape} vs {b.shape}")
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(norms, 1e-12)


def calibrate_threshold(scores_same, scores_diff, far: float = 0.01) -> float:
    """The lowest threshold t such that at most a fraction `far` of the different-person scores
    reach it (a pair matches when score >= t)."""
    diff = np.sort(np.asarray(scores_diff, dtype=np.float64))[::-1]
    if not 0.0 <= far < 1.0 or len(diff) == 0:
        raise ValueError(
            f"calibrate_threshold: need 0 <= far < 1 and some different-person scores (far={far}, {len(diff)} scores)"
        )
    allowed = int(np.floor(far * len(diff)))  # false accepts we may keep
    # Just above the (allowed+1)-th highest impostor score; ties there are all rejected.
    return float(np.nextafter(diff[allowed], np.inf))


def roc_auc(scores_same, scores_diff) -> float:
    """Probability that a same-person pair outscores a different-person pair (ties count half)."""
    same = np.asarray(scores_same, dtype=np.float64)[:, None]
    diff = np.asarray(scores_diff, dtype=np.float64)[None, :]
    return float((same > diff).mean() + 0.5 * (same == diff).mean())


# ---------------------------------------------------------------------------------------------
# LFW pairs

CALIBRATION_VERSION = 1  # bump when alignment, preprocessing or the procedure changes: old caches go stale
Pair = tuple[str, str, bool]  # photo path relative to the LFW folder, the other photo, same person?
DEV_TRAIN_PAIRS = "split_lists/pairsDevTrain.txt"  # in the raw area: the pairs evaluation calibrates on


def lfw_photo(name: str, index: int) -> str:
    return f"images/{name}/{name}_{index:04d}.jpg"


def read_lfw_pairs(pairs_file: str | os.PathLike) -> list[Pair]:
    """LFW's pairs file: first line N, then N matched `name i j`, then N mismatched `name1 i name2 j`."""
    lines = [line.split() for line in Path(pairs_file).read_text().splitlines() if line.strip()]
    try:
        count = int(lines[0][0])
        matched = [(lfw_photo(n, int(i)), lfw_photo(n, int(j)), True) for n, i, j in lines[1 : 1 + count]]
        mismatched = [
            (lfw_photo(a, int(i)), lfw_photo(b, int(j)), False) for a, i, b, j in lines[1 + count : 1 + 2 * count]
        ]
    except (IndexError, ValueError) as err:
        raise ValueError(
            f"{pairs_file} is not an LFW pairs file (N, N `name i j`, N `name1 i name2 j`): {err}"
        ) from err
    if len(matched) != count or len(mismatched) != count:
        raise ValueError(
            f"{pairs_file} announces {count} pairs of each kind but holds {len(matched)} + {len(mismatched)}"
        )
    return matched + mismatched


def _landmarker_name(config: LandmarkConfig) -> str:
    """How the calibration cache names a landmarker built from `config`: "dlib" for the data
    steps' usual settings (the name earlier caches carry), else the settings themselves."""
    if config.backend == "dlib" and config.upsample_when_missing:
        return "dlib"
    return f"{config.backend} {json.dumps(dataclasses.asdict(config), sort_keys=True)}"


def lfw_pair_calibration(
    lfw_dir: str | os.PathLike,
    matcher: FaceResMatcher,
    landmarker: Callable | LandmarkConfig,
    max_pairs: int | None = None,
    *,
    far: float = 0.01,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    pairs_file: str = "pairsDevTrain.txt",
) -> dict:
    """Score LFW's same/different-person pairs with `matcher`; return the 1%-FAR threshold and ROC figures.

    landmarker: photo -> FaceLandmarks | None (facectx.data.landmarks), or params' `landmarks`
    settings, from which the data steps' landmarker is built only when the cache misses.
    max_pairs: use the first max_pairs pairs of each kind (None: all). Pairs whose photos are
    missing from this LFW copy, or in which no face is found, are skipped (and counted).
    The result is cached as JSON under <cache>/matcher_calibration/, keyed by a hash of the pairs
    scored, the matcher's name and the landmarker, so it is computed once; use_cache=False
    recomputes (and refreshes the cache).
    """
    lfw = Path(lfw_dir)
    requested, present = _pairs_with_photos(lfw, pairs_file, max_pairs)
    landmarker_name = _landmarker_label(landmarker)
    cache_file = _cache_file(present, matcher, landmarker_name, far, cache_dir)
    if use_cache and cache_file.is_file():
        return json.loads(cache_file.read_text())

    if isinstance(landmarker, LandmarkConfig):
        landmarker = make_landmarker(landmarker)
    photos = sorted({photo for pair in present for photo in pair[:2]})
    descriptors, timing = _describe_photos(lfw, photos, matcher, landmarker)
    scored = [p for p in present if p[0] in descriptors and p[1] in descriptors]
    if not any(p[2] for p in scored) or all(p[2] for p in scored):
        raise ValueError(
            f"{lfw / pairs_file}: need both same- and different-person pairs with faces found in "
            f"{lfw / 'images'}; {len(present)} of {requested} pairs have their photos, "
            f"{len(scored)} have faces"
        )
    scores = cosine(np.stack([descriptors[p[0]] for p in scored]), np.stack([descriptors[p[1]] for p in scored]))
    is_same = np.array([p[2] for p in scored])
    result = {
        **_roc_figures(scores, is_same, far),
        "skipped_missing_photo": requested - len(present),
        "skipped_no_face": len(present) - len(scored),
        "mean_score_same": float(scores[is_same].mean()),
        "mean_score_diff": float(scores[~is_same].mean()),
        **timing,
        "matcher": matcher.name,
        "landmarker": landmarker_name,
        "pairs_file": pairs_file,
    }
    write_json(cache_file, result)
    return result


def _pairs_with_photos(lfw: Path, pairs_file: str, max_pairs: int | None) -> tuple[int, list[Pair]]:
    """How many pairs were asked for (max_pairs of each kind), and those whose two photos this LFW copy has."""
    asked = pairs_scored(read_lfw_pairs(lfw / pairs_file), max_pairs)
    present = [p for p in asked if (lfw / p[0]).is_file() and (lfw / p[1]).is_file()]
    return len(asked), present


def pairs_scored(pairs: list[Pair], max_pairs: int | None) -> list[Pair]:
    """The first max_pairs same-person pairs and the first max_pairs others (None: all)."""
    return [p for p in pairs if p[2]][:max_pairs] + [p for p in pairs if not p[2]][:max_pairs]


def _landmarker_label(landmarker: Callable | LandmarkConfig) -> str:
    """The landmarker's name in the cache key and the result: its settings' name, or the callable's."""
    if isinstance(landmarker, LandmarkConfig):
        return _landmarker_name(landmarker)
    return getattr(landmarker, "name", type(landmarker).__qualname__)


def _cache_file(
    present: list[Pair], matcher: FaceResMatcher, landmarker_name: str, far: float, cache_dir: str | os.PathLike | None
) -> Path:
    """Where this calibration is cached: named by a hash of everything that decides its result."""
    key = hashlib.sha256(
        json.dumps(
            {
                "pairs": present,
                "matcher": matcher.name,
                "landmarker": landmarker_name,
                "far": far,
                "version": CALIBRATION_VERSION,
            }
        ).encode()
    ).hexdigest()[:24]
    return cache_root(cache_dir) / "matcher_calibration" / f"{key}.json"


def _roc_figures(scores: np.ndarray, is_same: np.ndarray, far: float) -> dict:
    """The threshold at `far`, the AUC, and the accept rates and pair counts at that threshold."""
    threshold = calibrate_threshold(scores[is_same], scores[~is_same], far)
    return {
        "threshold": threshold,
        "auc": roc_auc(scores[is_same], scores[~is_same]),
        "tpr_at_far": float((scores[is_same] >= threshold).mean()),
        "far": far,
        "far_measured": float((scores[~is_same] >= threshold).mean()),
        "pairs": len(scores),
        "pairs_same": int(is_same.sum()),
        "pairs_diff": int((~is_same).sum()),
    }


def _describe_photos(
    lfw: Path, photos: list[str], matcher: FaceResMatcher, landmarker: Callable, chunk: int = 32
) -> tuple[dict[str, np.ndarray], dict]:
    """Descriptors of the photos in which a face is found, and the time spent per face.

    Photos go through in chunks so that memory holds a chunk of pixels, not the whole set.
    """
    descriptors: dict[str, np.ndarray] = {}
    landmark_s = embed_s = 0.0
    for start in range(0, len(photos), chunk):
        images, points, names = [], [], []
        for photo in photos[start : start + chunk]:
            with Image.open(lfw / photo) as img:
                image = np.asarray(img.convert("RGB"))
            began = time.perf_counter()
            found = landmarker(image)
            landmark_s += time.perf_counter() - began
            if found is not None:
                images.append(image)
                points.append(found.points)
                names.append(photo)
        if names:
            began = time.perf_counter()
            embedded = matcher.embed(images, np.stack(points))
            embed_s += time.perf_counter() - began
            descriptors.update(zip(names, embedded))
    faces = max(len(descriptors), 1)
    return descriptors, {
        "photos": len(photos),
        "faces": len(descriptors),
        "landmark_ms_per_photo": 1000 * landmark_s / max(len(photos), 1),
        "embed_ms_per_face": 1000 * embed_s / faces,
    }
