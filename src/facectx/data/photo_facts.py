"""validate's per-photo facts (decoding, faces, 68 landmarks, mask geometry), gathered over a pool of
worker processes; facectx.data.validate judges them with its great-expectations suite."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from facectx.config import CropConfig, LandmarkConfig, ValidateConfig
from facectx.data.landmarks import make_landmarker
from facectx.data.masks import face_frame, hull_mask, outside_fraction, points_in_frame
from facectx.data.photos import PhotoRejected, decode_photo
from facectx.io_utils import sha256_bytes
from facectx.progress import Progress


@dataclass(frozen=True)
class FactsJob:
    """What a worker needs to gather one photo's facts (pickled to each worker with its photo)."""

    images_dir: str
    validate: ValidateConfig
    crop: CropConfig
    landmarks: LandmarkConfig


# A pool worker's landmarker, set by _init_worker in each worker process (never in the parent:
# the in-process path passes its landmarker to photo_facts instead).
_worker_landmarker = None


def _init_worker(landmarks: LandmarkConfig) -> None:
    global _worker_landmarker
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    _worker_landmarker = make_landmarker(landmarks)


def _facts_in_worker(args: tuple[str, FactsJob]) -> dict:
    return photo_facts(*args, landmarker=_worker_landmarker)


def photo_facts(relative_path: str, job: FactsJob, landmarker) -> dict:
    """Everything validation needs to know about one photo; `error` says why it cannot be used."""
    facts, rgb = decoded_facts(relative_path, os.path.join(job.images_dir, relative_path), job.validate)
    if rgb is not None and min(rgb.shape[:2]) >= job.validate.min_side_px:
        face_facts(facts, rgb, job.crop, landmarker)  # a photo too small: the suite reports its size
    return facts


def decoded_facts(relative_path: str, source, validate: ValidateConfig) -> tuple[dict, np.ndarray | None]:
    """One photo's facts as far as decoding goes, and its RGB pixels (None when it does not decode).
    source: its file, or its bytes (`facectx hallucinate-dataset` reads S3 objects into memory)."""
    facts = {
        "relative_path": relative_path,
        "error": None,
        "error_check": None,
        "decoded_width": None,
        "decoded_height": None,
        "pixel_sha256": None,
        "face_count": 0,
        "subject_box": None,
        "other_boxes": "[]",
        "points": None,
        "landmarks_inside_photo": None,
        "crop_outside_fraction": None,
        "mask_fraction": None,
    }
    try:
        rgb = decode_photo(source, validate.max_pixels, validate.formats)
    except PhotoRejected as err:
        facts.update(error=str(err), error_check="decodes_to_8bit_rgb")
        return facts, None
    height, width = rgb.shape[:2]
    facts.update(decoded_width=width, decoded_height=height, pixel_sha256=sha256_bytes(rgb.tobytes()))
    return facts, rgb


def face_facts(facts: dict, rgb: np.ndarray, crop: CropConfig, landmarker) -> None:
    """The face, its 68 points and the mask geometry of a decoded photo, into `facts`."""
    height, width = rgb.shape[:2]
    found = landmarker(rgb)
    if found is None:
        facts.update(error="no face found", error_check="face_found")
        return
    points = found.points
    frame = face_frame(points, crop)
    frame_points = points_in_frame(points, frame, crop.size_px)
    facts.update(
        face_count=1 + len(found.other_boxes),
        subject_box=list(found.subject_box),
        other_boxes=json.dumps([list(b) for b in found.other_boxes]),
        points=points.reshape(-1).tolist(),
        landmarks_inside_photo=bool(((points >= 0) & (points <= [width - 1, height - 1])).all()),
        crop_outside_fraction=outside_fraction(frame, width, height),
        mask_fraction=float(hull_mask(frame_points, crop.size_px).mean()),
    )


def gather_facts(relative_paths: list[str], job: FactsJob, workers: int, progress: Progress) -> pd.DataFrame:
    """Every photo's facts, in order; `progress` advances by one a photo."""
    tasks = [(p, job) for p in relative_paths]
    rows = []
    if workers <= 1 or len(tasks) < 2:
        landmarker = make_landmarker(job.landmarks)
        for task in tasks:
            rows.append(photo_facts(*task, landmarker=landmarker))
            progress.advance(1)
    else:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_init_worker, initargs=(job.landmarks,)) as pool:
            pending = pool.imap(_facts_in_worker, tasks, chunksize=16)
            # great-expectations takes seconds to import; do it while the workers run (after the
            # fork, so no child inherits a half-finished import).
            import great_expectations  # noqa: F401

            for row in pending:
                rows.append(row)
                progress.advance(1)
    return pd.DataFrame(rows)


def mark_duplicates(facts: pd.DataFrame) -> pd.DataFrame:
    """duplicate_of = the first photo (by path) with the same decoded pixels, else None. Photos
    that do not decode have no pixels and are nobody's duplicate (their digest is missing: None,
    or NaN once pandas has merged the table, and NaN is one object, so it would match itself)."""
    facts = facts.sort_values("relative_path", ignore_index=True)
    first_with = {}
    duplicate_of = []
    for path, digest in zip(facts.relative_path, facts.pixel_sha256):
        if pd.isna(digest):
            duplicate_of.append(None)
        elif digest in first_with:
            duplicate_of.append(first_with[digest])
        else:
            first_with[digest] = path
            duplicate_of.append(None)
    return facts.assign(duplicate_of=duplicate_of)
