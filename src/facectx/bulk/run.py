"""A dataset through the model, shard by shard: the one implementation behind the CLI command
`hallucinate-dataset`, the DVC stage `hallucinate` and the Kubeflow pipeline `facectx-hallucinate`.

start(): list the source into OUT and stamp it (or check the stamp); run_shards(): every
unfinished shard of a group (all of them, or the Kubeflow step's share), the workers reading the
next shard's photos while the generator takes this one's; gather(): the shards' tables into one.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from facectx.bulk.frames import WEBP_LOSSLESS_METHOD, sample_grid
from facectx.bulk.listing import LISTING, Listing, check_stamp, list_source, listing_bytes, read_listing, stamp_bytes
from facectx.bulk.model import ResolvedModel
from facectx.bulk.output import MANIFEST, QUARANTINE, STAMP, SUMMARY, open_output, shard_name
from facectx.bulk.photos import PhotoJob, PhotoPool
from facectx.bulk.priority import lower_this_threads_priority
from facectx.bulk.shard import STAGE, ShardSettings, hallucinate_shard, write_shard
from facectx.config import CropConfig, HallucinateConfig, LandmarkConfig, ValidateConfig
from facectx.data.quarantine import QUARANTINE_COLUMNS
from facectx.progress import LOG_LINES, Progress, ProgressStyle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSettings:
    """Everything that decides the bytes of OUT (recorded in its stamp)."""

    hallucinate: HallucinateConfig
    crop: CropConfig
    landmarks: LandmarkConfig
    validate: ValidateConfig
    extensions: tuple[str, ...]
    max_attempts: int

    def stamped(self) -> dict:
        """The settings that decide the frames' bytes (not speed settings: workers, batch, device)."""
        h = self.hallucinate
        return {
            "shard_photos": h.shard_photos,
            "image_format": h.image_format,
            "webp_quality": h.webp_quality,
            "webp_lossless_method": WEBP_LOSSLESS_METHOD,
            "crop": asdict(self.crop),
            "landmarks": asdict(self.landmarks),
            "validate": asdict(self.validate) | {"workers": None},
        }


def start(source: str, out: str, model: ResolvedModel, settings: DatasetSettings) -> Listing:
    """List the source and stamp OUT, or refuse an OUT another model or source stamped."""
    if model.stage != settings.crop.size_px:
        raise ValueError(
            f"--model {model.spec}: its last stage makes {model.stage} px frames, crop.size_px is "
            f"{settings.crop.size_px}: use the model's last stage's checkpoint"
        )
    listing = list_source(source, settings.extensions, settings.max_attempts, settings.hallucinate.shard_photos)
    output = open_output(out)
    data = listing_bytes(listing)
    stamp = stamp_bytes(model, data, settings.stamped())
    found = output.read_bytes(STAMP)
    if found is not None:
        check_stamp(output.uri, found, stamp)
    else:
        output.write_bytes(LISTING, data)
        output.write_bytes(STAMP, stamp)
    return listing


def read_started(source: str, out: str, settings: DatasetSettings) -> Listing:
    """The listing start() wrote (a Kubeflow group step's view: no second listing of the source)."""
    data = open_output(out).read_bytes(LISTING)
    if data is None:
        raise FileNotFoundError(f"{out}: no {LISTING}; run the listing step (`start`) first")
    return read_listing(data, source, settings.hallucinate.shard_photos)


def run_shards(
    listing: Listing,
    out: str,
    model: ResolvedModel,
    settings: DatasetSettings,
    group: int = 0,
    groups: int = 1,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    """Every unfinished shard whose index % groups == group; returns counts and seconds per phase.
    progress_style: a bar on a terminal, else log lines (facectx/progress.py)."""
    from facectx.inference import Hallucinator  # torch: loaded after the workers fork

    output = open_output(out)
    done = output.finished_shards()
    todo = [i for i in range(listing.shard_count) if i % groups == group and shard_name(i) not in done]
    h = settings.hallucinate
    resolutions = tuple(sorted({r for r in _model_resolutions(model)} | {settings.crop.size_px}))
    job = PhotoJob(listing.source, settings.extensions, settings.max_attempts, settings.validate,
                   settings.crop, settings.landmarks, resolutions)  # fmt: skip
    stats = {"shards_done_before": len(done), "shards_run": 0, "photos_run": 0, "seconds": Counter(), "samples": []}
    pool = PhotoPool(job, h.workers)
    progress = Progress(sum(len(listing.shard(i)) for i in todo), "hallucinate-dataset", "photo", progress_style)
    threads = _GeneratorThreads(_device(h.device))
    try:
        hallucinator = Hallucinator(model.checkpoint_dir, _device(h.device))
        shard_settings = ShardSettings(
            h.image_format, h.webp_quality, h.batch_size, settings.validate, settings.crop.size_px
        )
        started = time.perf_counter()
        with ThreadPoolExecutor(1, thread_name_prefix="encode-and-write") as writer:
            writer.submit(lower_this_threads_priority)  # the generator keeps its core (priority.py)
            _generate_and_write(
                todo, listing, pool, hallucinator, (model, shard_settings, output), writer, stats, progress
            )
        stats["wall_seconds"] = time.perf_counter() - started
    finally:
        pool.close()
        progress.close()
        threads.restore()
    return stats


def _generate_and_write(todo, listing, pool, hallucinator, target, writer, stats, progress) -> None:
    """The generator takes shard after shard without waiting on the writer: a shard is encoded,
    staged and committed on the writer's thread while the generator takes the next one, and its
    outcome (a failed write raises here) is collected before the next shard is handed over. The
    workers read ahead: the next shard's photos are queued as soon as this one's start."""
    model, shard_settings, output = target
    writing = None
    pending = pool.submit(listing.shard(todo[0])) if todo else None
    for position, index in enumerate(todo):
        results = pending
        if position + 1 < len(todo):
            pending = pool.submit(listing.shard(todo[position + 1]))
        shard = hallucinate_shard(results, hallucinator, shard_settings, writer)
        if writing is not None:
            _collect(*writing, shard_settings.size_px, stats, progress)
        writing = (shard, writer.submit(_write_and_commit, index, shard, model, shard_settings, output))
    if writing is not None:
        _collect(*writing, shard_settings.size_px, stats, progress)


def _write_and_commit(index, shard, model, shard_settings, output) -> Counter:
    name = shard_name(index)
    staged = output.staging(name)
    try:
        seconds = write_shard(name, shard, model, shard_settings, staged)
        commit_started = time.perf_counter()
        output.commit(name, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # a half-written shard is never left behind
        raise
    seconds["write"] += time.perf_counter() - commit_started
    return seconds


def _collect(shard, writing, size_px, stats, progress) -> None:
    waited = time.perf_counter()
    seconds = writing.result()
    stats["seconds"]["wait_for_writer"] += time.perf_counter() - waited
    for result in shard.results:
        stats["seconds"].update(result.seconds)
    stats["seconds"].update(shard.seconds)
    stats["seconds"].update(seconds)
    stats["shards_run"] += 1
    stats["photos_run"] += len(shard.results)
    wanted = max(0, 16 - len(stats["samples"]))  # (masked, output) pairs of the first frames, for the sample grid
    stats["samples"].extend((r.masked[size_px], o) for r, o in list(zip(shard.usable, shard.outputs))[:wanted])
    progress.advance(len(shard.results))


def gather(out: str, listing: Listing) -> dict:
    """Every shard's manifest and quarantine into OUT's manifest.parquet and quarantine.parquet, and
    the counts into summary.json; refuses while a shard is unfinished."""
    output = open_output(out)
    missing = [shard_name(i) for i in range(listing.shard_count) if shard_name(i) not in output.finished_shards()]
    if missing:
        raise RuntimeError(
            f"{out}: {len(missing)} shard(s) unfinished ({', '.join(missing[:5])}...): run again to finish them"
        )
    names = [shard_name(i) for i in range(listing.shard_count)]
    manifest = pd.concat([output.read_table(n, MANIFEST) for n in names], ignore_index=True)
    refused = listing.rejected.assign(stage="list", check="listing", source_uri=listing.rejected.uri, shard=None)
    shard_quarantine = [output.read_table(n, QUARANTINE) for n in names]
    quarantine = pd.concat([*shard_quarantine, refused[[*QUARANTINE_COLUMNS, "shard"]]], ignore_index=True)
    found = len(listing.photos) + len(listing.rejected)
    summary = {
        "photos_found": found,
        "written": int(len(manifest)),
        "quarantined": int(len(quarantine)),
        "accounted_for": found == len(manifest) + len(quarantine),
        "quarantined_by_check": dict(sorted(Counter(quarantine.check).items())),
        "shards": listing.shard_count,
    }
    for name, table in ((MANIFEST, manifest), (QUARANTINE, quarantine)):
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        output.write_bytes(name, buffer.getvalue())
    output.write_bytes(SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    if not summary["accounted_for"]:
        raise RuntimeError(f"{out}: photos do not add up: {summary}")
    return summary


def grid_of(samples) -> np.ndarray | None:
    return sample_grid([m for m, _ in samples], [o for _, o in samples]) if samples else None


def _model_resolutions(model: ResolvedModel) -> tuple[int, ...]:
    from facectx.checkpoint import read_meta

    return tuple(r for r in read_meta(model.checkpoint_dir)["model_args"]["resolutions"] if r <= model.stage)


class _GeneratorThreads:
    """The generator runs on one CPU thread while the shards run, whatever the machine and the
    number of photo workers: a convolution's float sums depend on how its work is split between
    threads (5e-8 apart for 1 vs 2 threads here), which now and then flips a rounded pixel, and
    the output must be the same bytes for the same inputs and model. One thread is also the
    fastest here beside the workers: torch's default, every core, fights them (2026-12-07, this
    2-core machine at load ~2.4: the quick model 57 frames/s at batch 32 on one thread, 12-23 on
    two; the paper width 5.2 and 3.0)."""

    def __init__(self, device: str):
        import torch

        self._before = torch.get_num_threads()
        if device == "cpu":
            torch.set_num_threads(1)

    def restore(self) -> None:
        import torch

        torch.set_num_threads(self._before)


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["STAGE", "DatasetSettings", "gather", "grid_of", "read_started", "run_shards", "start"]
