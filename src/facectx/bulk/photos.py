"""One source photo -> what the generator needs, in worker processes while the generator runs.

Reading, decoding, the face and its 68 points are validate's (facectx.data.photo_facts), the crop,
mask and pyramid prepare's (facectx.data.examples): a photo here becomes exactly the example
`prepare` would make of it. Each result carries the seconds its phases took.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from facectx.bulk.priority import lower_this_threads_priority
from facectx.config import CropConfig, LandmarkConfig, ValidateConfig
from facectx.data.examples import build_example
from facectx.data.landmarks import make_landmarker
from facectx.data.masks import face_frame
from facectx.data.photo_facts import decoded_facts, face_facts
from facectx.data.sources import SourcePhoto, SourceUnavailable, identity_of, open_source


@dataclass(frozen=True)
class PhotoJob:
    """What a worker needs (pickled once to each worker)."""

    source: str  # folder or s3:// prefix
    extensions: tuple[str, ...]
    max_attempts: int
    validate: ValidateConfig
    crop: CropConfig
    landmarks: LandmarkConfig
    resolutions: tuple[int, ...]  # pyramid levels the model reads (the frame size included)


@dataclass
class PhotoResult:
    photo: SourcePhoto
    sha256: str | None  # of the file's bytes
    facts: dict  # validate's facts (error, sizes, points, mask_fraction, ...)
    frame: tuple[int, int, int] | None = None  # left, top, side in photo pixels
    masked: dict[int, np.ndarray] | None = None
    mask: dict[int, np.ndarray] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        return identity_of(self.photo.relative_path)


class PhotoReader:
    """A source and a landmarker, opened once per process."""

    def __init__(self, job: PhotoJob):
        self.job = job
        self.source = open_source(job.source, job.extensions, job.max_attempts)
        self.landmarker = make_landmarker(job.landmarks)

    def __call__(self, photo: SourcePhoto) -> PhotoResult:
        started = time.perf_counter()
        try:
            data = self.source.read(photo)
        except SourceUnavailable:
            raise  # the source failed past its retries: stop; a re-run goes on from the finished shards
        except (OSError, ValueError) as err:  # gone since it was listed, denied: this photo's fault
            facts = {"relative_path": photo.relative_path, "error": f"cannot read: {err}", "error_check": "readable"}
            return PhotoResult(photo, None, facts, seconds={"read": time.perf_counter() - started})
        read = time.perf_counter()
        facts, rgb = decoded_facts(photo.relative_path, data, self.job.validate)
        decoded = time.perf_counter()
        result = PhotoResult(photo, hashlib.sha256(data).hexdigest(), facts)
        result.seconds = {"read": read - started, "decode": decoded - read}
        if rgb is None or min(rgb.shape[:2]) < self.job.validate.min_side_px:
            return result
        before = dict(self.landmarker.seconds)
        face_facts(facts, rgb, self.job.crop, self.landmarker)
        for phase in ("detect", "landmarks"):
            result.seconds[phase] = self.landmarker.seconds[phase] - before[phase]
        if facts["points"] is not None:
            cropped = time.perf_counter()
            points = np.asarray(facts["points"], np.float32).reshape(68, 2)
            example = build_example(rgb, points, self.job.crop, self.job.resolutions)
            frame = face_frame(points, self.job.crop)
            result.frame = (frame.left, frame.top, frame.side)
            result.masked, result.mask = example.masked, example.mask
            result.seconds["crop"] = time.perf_counter() - cropped
        return result


_reader: PhotoReader | None = None  # a worker process's reader (set in the worker only)


def _init_worker(job: PhotoJob) -> None:
    global _reader
    cv2.setNumThreads(1)  # one process per core already
    lower_this_threads_priority()  # the generator keeps its core (priority.py)
    _reader = PhotoReader(job)


def _read_in_worker(photo: SourcePhoto) -> PhotoResult:
    return _reader(photo)


class PhotoPool:
    """`workers` processes reading photos (or this process alone when workers <= 1).
    submit(photos) queues them at once and returns their results, in order, as they come: the
    generator starts on a shard's first batch, not once the whole shard is read."""

    def __init__(self, job: PhotoJob, workers: int):
        self._inline = PhotoReader(job) if workers <= 1 else None
        self._pool = None
        if workers > 1:
            context = multiprocessing.get_context("fork")
            self._pool = context.Pool(workers, initializer=_init_worker, initargs=(job,))

    def submit(self, photos: list[SourcePhoto]) -> Iterator[PhotoResult]:
        if self._pool is None:
            return (self._inline(p) for p in photos)
        return self._pool.imap(_read_in_worker, photos, chunksize=4)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
