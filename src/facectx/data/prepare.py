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
from facectx.data.examples import build_example
from facectx.data.photos import decode_photo
from facectx.data.quarantine import quarantine_table
from facectx.data.shards import SplitShards, SplitWriter, write_meta
from facectx.data.splits import SPLITS, assign_splits
from facectx.io_utils import atomic_path, write_json, write_parquet
from facectx.progress import LOG_LINES, Progress, ProgressStyle

log = logging.getLogger(__name__)


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


def prepare(
    raw_dir: str | os.PathLike,
    validated_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PrepareConfig,
    crop: CropConfig,
    validate_config: ValidateConfig,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    raw_dir, validated_dir, out_dir = Path(raw_dir), Path(validated_dir), Path(out_dir)
    records = pd.read_parquet(validated_dir / "records.parquet").sort_values("relative_path", ignore_index=True)
    quarantine = pd.read_parquet(validated_dir / "quarantine.parquet")
    photos_found = int(pd.read_json(validated_dir / "metrics.json", typ="series")["photos_found"])
    split_of = assign_splits(list(records.identity), config.split, raw_dir / "split_lists")
    records["split"] = records.identity.map(split_of)

    job = _Job(str(raw_dir / "images"), crop, config.resolutions, validate_config.max_pixels, validate_config.formats)
    with Progress(len(records), "prepare", "photo", progress_style) as progress:
        rows, failures = _write_splits(records, split_of, job, out_dir, config, progress)
    quarantine = pd.concat([quarantine, quarantine_table(failures)], ignore_index=True)
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
    write_meta(out_dir, config.resolutions, asdict(crop), config.mirror, rows)
    log.info("prepare: %s", metrics)
    if not metrics["accounted_for"]:
        raise RuntimeError(
            f"photos do not add up: {photos_found} found != {prepared} prepared + {len(quarantine)} quarantined"
        )
    return metrics


def _write_splits(
    records: pd.DataFrame,
    split_of: dict[str, str],
    job: _Job,
    out_dir: Path,
    config: PrepareConfig,
    progress: Progress,
) -> tuple[dict[str, int], list[dict]]:
    """Every record's example into its split's shards (train: with its mirrored copy when
    config.mirror); returns the rows per split and a quarantine row per photo that failed."""
    writers = {}
    for split in SPLITS:
        rows = int((records.split == split).sum()) * (2 if config.mirror and split == "train" else 1)
        writers[split] = SplitWriter(out_dir / split, config.resolutions, max(rows, 1))

    tasks = [(r.relative_path, r.points, job) for r in records.itertuples()]
    identity_of = dict(zip(records.relative_path, records.identity))
    failures = []
    with _pool(config.workers) as pool:
        for relative_path, example, error in pool.imap(_prepare_one, tasks, chunksize=16):
            progress.advance(1)
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
    return {split: writer.close() for split, writer in writers.items()}, failures


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
        shards = SplitShards(out_dir, split)  # meta.json is not written yet: the files tell the frame size
        size = max(shards.stored_resolutions("target"))
        target = shards.array("target", size)
        if len(target):
            masked = shards.array("masked", size)
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
