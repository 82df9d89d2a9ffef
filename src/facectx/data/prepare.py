"""prepare: crop each valid photo to a square frame around its face, build the face mask and the
masked input, the pyramid at every resolution, the identity-disjoint splits, the shards and a
preview grid.

Outputs (one folder):
    <split>/...             shards (see facectx.data.shards)
    quarantine.parquet      every photo not prepared, from any stage, with its reason
    preview.png             masked | full pairs from the test split
    meta.json               resolutions, counts, the crop settings
    metrics.json            photos in = prepared + quarantined, rows per split (a DVC metric)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from facectx.config import CropConfig, PrepareConfig, ValidateConfig
from facectx.data.ingest import QUARANTINE_COLUMNS
from facectx.data.masks import (
    crop_to_frame,
    downsample,
    face_frame,
    frame_validity,
    hull_mask,
    mirror_points,
    points_in_frame,
)
from facectx.data.photos import decode_photo
from facectx.data.shards import NpyStreamWriter
from facectx.data.splits import SPLITS, assign_splits
from facectx.io_utils import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One prepared photo: arrays keyed by resolution."""

    target: dict[int, np.ndarray]
    masked: dict[int, np.ndarray]
    mask: dict[int, np.ndarray]
    valid: dict[int, np.ndarray]  # 255 where the frame lies inside the photo (frame_validity)
    landmarks: np.ndarray  # (68, 2) in the largest frame

    def mirrored(self) -> Example:
        flip = lambda arrays: {r: np.ascontiguousarray(a[:, ::-1]) for r, a in arrays.items()}  # noqa: E731
        size = max(self.target)
        return Example(
            flip(self.target), flip(self.masked), flip(self.mask), flip(self.valid), mirror_points(self.landmarks, size)
        )


def build_example(rgb: np.ndarray, points: np.ndarray, crop: CropConfig, resolutions: tuple[int, ...]) -> Example:
    frame = face_frame(points, crop)
    target = crop_to_frame(rgb, frame, crop.size_px)
    valid = frame_validity(frame, rgb.shape[1], rgb.shape[0], crop.size_px)
    return example_from_frame(target, points_in_frame(points, frame, crop.size_px), resolutions, valid)


def example_from_frame(
    target: np.ndarray, frame_points: np.ndarray, resolutions: tuple[int, ...], valid: np.ndarray
) -> Example:
    """Mask, masked face and pyramid from the full-size frame, its landmarks and its validity
    (also how an air-gapped machine rebuilds the shards from a pack of frames)."""
    size = target.shape[0]
    mask = hull_mask(frame_points, size)
    masked = target * mask[:, :, None]
    mask255 = mask * 255
    example = Example({size: target}, {size: masked}, {size: mask255}, {size: valid}, frame_points)
    for r in resolutions:
        if r != size:
            example.target[r] = downsample(target, r)
            example.masked[r] = downsample(masked, r)
            example.mask[r] = downsample(mask255, r)
            example.valid[r] = downsample(valid, r)
    return example


@dataclass(frozen=True)
class _Job:
    images_dir: str
    crop: CropConfig
    resolutions: tuple[int, ...]
    max_pixels: int
    formats: tuple[str, ...]


def _prepare_one(args):
    relative_path, points, job = args
    try:
        rgb = decode_photo(os.path.join(job.images_dir, relative_path), job.max_pixels, job.formats)
        return (
            relative_path,
            build_example(rgb, np.asarray(points, np.float32).reshape(68, 2), job.crop, job.resolutions),
            None,
        )
    except Exception as err:  # validated photos should not fail; if one does, quarantine it
        return relative_path, None, f"prepare failed: {type(err).__name__}: {err}"


class SplitWriter:
    """Streams the examples of one split into its shard files."""

    def __init__(self, folder: Path, resolutions: tuple[int, ...], max_rows: int):
        self.folder = folder
        self.writers = {}
        for r in resolutions:
            self.writers[("target", r)] = NpyStreamWriter(folder / f"target_{r}.npy", (r, r, 3), np.uint8, max_rows)
            self.writers[("masked", r)] = NpyStreamWriter(folder / f"masked_{r}.npy", (r, r, 3), np.uint8, max_rows)
            self.writers[("mask", r)] = NpyStreamWriter(folder / f"mask_{r}.npy", (r, r), np.uint8, max_rows)
            self.writers[("valid", r)] = NpyStreamWriter(folder / f"valid_{r}.npy", (r, r), np.uint8, max_rows)
        self.writers[("landmarks", 0)] = NpyStreamWriter(folder / "landmarks.npy", (68, 2), np.float32, max_rows)
        self.index = []

    def add(self, example: Example, relative_path: str, identity: str, mirrored: bool) -> None:
        for (kind, r), writer in self.writers.items():
            writer.append(example.landmarks if kind == "landmarks" else getattr(example, kind)[r])
        self.index.append(
            {"row": len(self.index), "relative_path": relative_path, "identity": identity, "mirrored": mirrored}
        )

    def close(self) -> int:
        for writer in self.writers.values():
            writer.close()
        write_parquet(
            self.folder / "index.parquet",
            pd.DataFrame(self.index, columns=["row", "relative_path", "identity", "mirrored"]),
        )
        return len(self.index)


def prepare(
    raw_dir: str | os.PathLike,
    validated_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PrepareConfig,
    crop: CropConfig,
    validate_config: ValidateConfig,
) -> dict:
    raw_dir, validated_dir, out_dir = Path(raw_dir), Path(validated_dir), Path(out_dir)
    records = pd.read_parquet(validated_dir / "records.parquet").sort_values("relative_path", ignore_index=True)
    quarantine = pd.read_parquet(validated_dir / "quarantine.parquet")
    photos_found = int(pd.read_json(validated_dir / "metrics.json", typ="series")["photos_found"])
    split_of = assign_splits(list(records.identity), config.split, raw_dir / "split_lists")
    records["split"] = records.identity.map(split_of)

    writers = {}
    for split in SPLITS:
        rows = int((records.split == split).sum()) * (2 if config.mirror and split == "train" else 1)
        writers[split] = SplitWriter(out_dir / split, config.resolutions, max(rows, 1))

    job = _Job(str(raw_dir / "images"), crop, config.resolutions, validate_config.max_pixels, validate_config.formats)
    tasks = [(r.relative_path, r.points, job) for r in records.itertuples()]
    identity_of = dict(zip(records.relative_path, records.identity))
    failures = []
    with _pool(config.workers) as pool:
        for relative_path, example, error in pool.imap(_prepare_one, tasks, chunksize=16):
            if error:
                failures.append(
                    {
                        "relative_path": relative_path,
                        "stage": "prepare",
                        "check": "prepare",
                        "reason": error,
                        "source_uri": None,
                    }
                )
                continue
            split = split_of[identity_of[relative_path]]
            writers[split].add(example, relative_path, identity_of[relative_path], mirrored=False)
            if config.mirror and split == "train":
                writers[split].add(example.mirrored(), relative_path, identity_of[relative_path], mirrored=True)

    rows = {split: writer.close() for split, writer in writers.items()}
    quarantine = pd.concat([quarantine, pd.DataFrame(failures, columns=QUARANTINE_COLUMNS)], ignore_index=True)
    write_parquet(out_dir / "quarantine.parquet", quarantine)
    prepared = len(records) - len(failures)
    write_preview(out_dir, config.preview_count)
    metrics = {
        "photos_found": photos_found,
        "prepared": prepared,
        "quarantined": int(len(quarantine)),
        "accounted_for": prepared + int(len(quarantine)) == photos_found,
        **{f"rows_{split}": n for split, n in rows.items()},
        **{f"identities_{split}": int(records[records.split == split].identity.nunique()) for split in SPLITS},
    }
    write_json(out_dir / "metrics.json", metrics)
    write_json(
        out_dir / "meta.json",
        {
            "resolutions": list(config.resolutions),
            "crop": asdict(crop),
            "mirror": config.mirror,
            "rows": rows,
            "arrays": ["target", "masked", "mask", "valid", "landmarks"],
        },
    )
    log.info("prepare: %s", metrics)
    if not metrics["accounted_for"]:
        raise RuntimeError(
            f"photos do not add up: {photos_found} found != {prepared} prepared + {len(quarantine)} quarantined"
        )
    return metrics


def _pool(workers: int):
    if workers <= 1:
        return _InlinePool()
    return multiprocessing.get_context("fork").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))


class _InlinePool:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, items, chunksize=1):
        return map(fn, items)


def write_preview(out_dir: Path, count: int) -> None:
    """A grid of masked | full pairs from the test split (or whichever split has rows)."""
    for split in ("test", "val", "train"):
        target_file = out_dir / split / f"target_{_largest(out_dir / split)}.npy"
        target = np.load(target_file, mmap_mode="r")
        if len(target):
            masked = np.load(out_dir / split / target_file.name.replace("target", "masked"), mmap_mode="r")
            break
    else:
        return
    count = min(count, len(target))
    pairs = [np.concatenate([masked[i], target[i]], axis=1) for i in range(count)]
    per_row = 4
    blank = np.zeros_like(pairs[0])
    while len(pairs) % per_row:
        pairs.append(blank)
    grid = np.concatenate(
        [np.concatenate(pairs[i : i + per_row], axis=1) for i in range(0, len(pairs), per_row)], axis=0
    )
    with atomic_path(out_dir / "preview.png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _largest(folder: Path) -> int:
    return max(int(p.stem.split("_")[1]) for p in folder.glob("target_*.npy"))
