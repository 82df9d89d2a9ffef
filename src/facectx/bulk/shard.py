"""One shard, written whole: validate's rules judge its photos, the generator hallucinates the
usable ones in batches (hallucinate_shard, on the generator's thread), and the frames, the shard's
manifest and its quarantine table are encoded and staged together (write_shard, on the writer's
thread; output.py makes them visible at once).

The manifest maps each frame back onto its photo: the frame is the square (frame_left, frame_top,
frame_side) of the photo, in photo pixels (it may run past the photo's edge, padded black), scaled
to frame_size_px; a frame pixel (x, y) is photo pixel (frame_left + x * frame_side / frame_size_px,
frame_top + y * frame_side / frame_size_px).
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.bulk.frames import EXTENSIONS, encode_frame
from facectx.bulk.model import ResolvedModel
from facectx.bulk.photos import PhotoResult
from facectx.config import ValidateConfig
from facectx.data.quarantine import QUARANTINE_COLUMNS
from facectx.data.rules import judge_row, photo_rules

MANIFEST_COLUMNS = [
    "relative_path", "source_uri", "sha256", "identity", "frame_path",
    "photo_width", "photo_height", "frame_left", "frame_top", "frame_side", "frame_size_px",
    "model_name", "model_version", "model_run_id", "model_weights_sha256", "data_version", "shard",
]  # fmt: skip
STAGE = "hallucinate"


class ShardWriteFailed(OSError):
    """Writing a shard failed (a full disk, ...): nothing of it was kept; finished shards stay."""


@dataclass(frozen=True)
class ShardSettings:
    image_format: str
    webp_quality: int
    batch_size: int
    validate: ValidateConfig
    size_px: int


def write_file(path: Path, data: bytes) -> None:
    """Where every byte of a shard is written (a test makes it fail as a full disk would); its
    folder exists."""
    with open(path, "wb") as handle:
        handle.write(data)


@dataclass
class HallucinatedShard:
    """A shard's photos through validate's rules and the generator; its frames still being encoded."""

    results: list[PhotoResult] = field(default_factory=list)  # every photo of the shard, in order
    reasons: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # relative_path: validate's
    usable: list[PhotoResult] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)  # the generator's frames of `usable`
    encoding: list[Future] = field(default_factory=list)  # each batch's encoded frames
    seconds: Counter = field(default_factory=Counter)


def hallucinate_shard(
    results: Iterable[PhotoResult], hallucinator, settings: ShardSettings, writer: Executor
) -> HallucinatedShard:
    """Judge each photo by validate's rules (rules.py, the suite's one definition) as the workers
    deliver it, run the generator on each full batch of usable photos, and hand each batch's frames
    to `writer` to encode (torch's kernels and the image encoders both release the GIL, so
    encoding leaves the generator's path). The batches are the usable photos in order, in
    settings.batch_size pieces, whatever the workers' timing: the same bytes every run. A duplicate
    photo gets its own hallucinated copy: duplicate_of stays unset."""
    rules, shard, batch = photo_rules(settings.validate), HallucinatedShard(), []
    waited = time.perf_counter()
    for result in results:
        shard.seconds["wait_for_workers"] += time.perf_counter() - waited
        shard.results.append(result)
        found = judge_row({**result.facts, "sha256": result.sha256 or "", "duplicate_of": None}, rules)
        if found:
            shard.reasons[result.photo.relative_path] = found
        else:
            batch.append(result)
        if len(batch) == settings.batch_size:
            _generate(batch, hallucinator, settings, writer, shard)
            batch = []
        waited = time.perf_counter()
    if batch:
        _generate(batch, hallucinator, settings, writer, shard)
    return shard


def _generate(batch: list[PhotoResult], hallucinator, settings: ShardSettings, writer: Executor, shard) -> None:
    began = time.perf_counter()
    masked = {r: np.stack([p.masked[r] for p in batch]) for r in hallucinator.resolutions}
    mask = {r: np.stack([p.mask[r] for p in batch]) for r in hallucinator.resolutions}
    frames = list(hallucinator.from_pyramid(masked, mask))
    shard.seconds["generator"] += time.perf_counter() - began
    shard.usable.extend(batch)
    shard.outputs.extend(frames)
    shard.encoding.append(writer.submit(_encode_batch, frames, settings))


def _encode_batch(frames: list[np.ndarray], settings: ShardSettings) -> tuple[list[bytes], float]:
    began = time.perf_counter()
    encoded = [encode_frame(frame, settings.image_format, settings.webp_quality) for frame in frames]
    return encoded, time.perf_counter() - began


def write_shard(
    name: str, shard: HallucinatedShard, model: ResolvedModel, settings: ShardSettings, staged: Path
) -> Counter:
    """Stage the shard's frames, manifest and quarantine table in `staged`; returns the seconds
    spent encoding and writing. Runs on the writer after the shard's batches were encoded there
    (one thread, in order), so it never waits for them."""
    encoded = [batch.result() for batch in shard.encoding]
    seconds = Counter(encode=sum(took for _, took in encoded))
    started, ext = time.perf_counter(), EXTENSIONS[settings.image_format]
    rows, folders = [], set()
    try:
        for result, data in zip(shard.usable, (data for frames, _ in encoded for data in frames)):
            frame_path = f"frames/{result.photo.relative_path}.{ext}"
            folder = (staged / frame_path).parent
            if folder not in folders:  # one mkdir a folder, not a frame
                folder.mkdir(parents=True, exist_ok=True)
                folders.add(folder)
            write_file(staged / frame_path, data)
            rows.append(_manifest_row(result, f"shards/{name}/{frame_path}", model, settings.size_px, name))
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        quarantine = _quarantine(shard.results, shard.reasons, name)
        write_file(staged / "manifest.parquet", _parquet_bytes(manifest))
        write_file(staged / "quarantine.parquet", _parquet_bytes(quarantine))
    except OSError as err:
        raise ShardWriteFailed(
            f"shard {name}: writing into {staged} failed ({err}); nothing of this shard was kept "
            "(its staging folder is removed), the finished shards are kept: free the space and run again"
        ) from err
    seconds["write"] = time.perf_counter() - started
    return seconds


def _manifest_row(result: PhotoResult, frame_path: str, model: ResolvedModel, size_px: int, shard: str) -> dict:
    left, top, side = result.frame
    return {
        "relative_path": result.photo.relative_path,
        "source_uri": result.photo.uri,
        "sha256": result.sha256,
        "identity": result.identity,
        "frame_path": frame_path,
        "photo_width": int(result.facts["decoded_width"]),
        "photo_height": int(result.facts["decoded_height"]),
        "frame_left": left,
        "frame_top": top,
        "frame_side": side,
        "frame_size_px": size_px,
        "model_name": model.registry_name,
        "model_version": model.registry_version,
        "model_run_id": model.run_id,
        "model_weights_sha256": model.weights_sha256,
        "data_version": model.data_version,
        "shard": shard,
    }


def _quarantine(results: list[PhotoResult], reasons: dict, shard: str) -> pd.DataFrame:
    rows = []
    for result in results:
        found = reasons.get(result.photo.relative_path)
        if found:
            rows.append(
                {
                    "relative_path": result.photo.relative_path,
                    "stage": STAGE,
                    "check": found[0][0],
                    "reason": "; ".join(reason for _, reason in found),
                    "source_uri": result.photo.uri,
                    "shard": shard,
                }
            )
    return pd.DataFrame(rows, columns=[*QUARANTINE_COLUMNS, "shard"])


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


__all__ = [
    "MANIFEST_COLUMNS",
    "HallucinatedShard",
    "ShardSettings",
    "ShardWriteFailed",
    "hallucinate_shard",
    "write_shard",
]
