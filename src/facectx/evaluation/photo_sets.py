"""The photos evaluation scores: a prepared split's test (or validation) photos, every array a
method or metric needs, and the mean training frame the mean-fill baseline pastes in."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facectx.data.shards import INDEX_FILE, SplitShards, array_file


@dataclass
class TestSet:
    target: np.ndarray  # (N, 128, 128, 3) uint8
    masked: dict[int, np.ndarray]
    mask: dict[int, np.ndarray]
    landmarks: np.ndarray  # (N, 68, 2)
    index: pd.DataFrame
    valid: np.ndarray  # (N, 128, 128) uint8: 255 inside the photo, 0 where the crop ran past its edge


def files_read(resolutions) -> list[str]:
    """The prepared files evaluation reads, relative to the prepared folder: what load_split reads
    of the test and val splits, and the training frames mean_training_frame averages."""
    frame = max(resolutions)
    pyramid = [array_file(kind, r) for r in resolutions for kind in ("masked", "mask")]
    read = [INDEX_FILE, array_file("landmarks"), array_file("target", frame), array_file("valid", frame), *pyramid]
    return [f"{split}/{name}" for split in ("test", "val") for name in read] + [
        f"train/{INDEX_FILE}",
        f"train/{array_file('target', frame)}",
    ]


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
