"""One shard, written whole: validate's rules judge its photos, the generator hallucinates the
usable ones in batches, and the frames, the shard's manifest and its quarantine table are staged
together (output.py makes them visible at once).

The manifest maps each frame back onto its photo: the frame is the square (frame_left, frame_top,
frame_side) of the photo, in photo pixels (it may run past the photo's edge, padded black), scaled
to frame_size_px; a frame pixel (x, y) is photo pixel (frame_left + x * frame_side / frame_size_px,
frame_top + y * frame_side / frame_size_px).
"""

from __future__ import annotations

import io
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    """Where every byte of a shard is written (a test makes it fail as a full disk would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def judge(results: list[PhotoResult], validate: ValidateConfig) -> dict[str, list[tuple[str, str]]]:
    """validate's rules (rules.py, the suite's one definition) photo by photo: {relative_path: [(check, reason)]}.
    A duplicate photo gets its own hallucinated copy: duplicate_of stays unset."""
    rules = photo_rules(validate)
    reasons = {}
    for result in results:
        found = judge_row({**result.facts, "sha256": result.sha256 or "", "duplicate_of": None}, rules)
        if found:
            reasons[result.photo.relative_path] = found
    return reasons


def hallucinate_and_encode(
    usable: list[PhotoResult], hallucinator, settings: ShardSettings
) -> tuple[list[np.ndarray], list[bytes], Counter]:
    """The frames of `usable` (in its order) and their encoded bytes, in batches of
    settings.batch_size. Each batch is encoded on a second thread while the generator takes the
    next: torch's kernels and the image encoders both release the GIL, so encoding leaves the
    generator's path (the process's critical one) where a core is free. Seconds: generator, encode
    (the encoder thread's own), wait_for_encoder (after the last batch)."""
    seconds, outputs, pending = Counter(), [], []
    with ThreadPoolExecutor(1, thread_name_prefix="encode-frames") as encoder:
        for start in range(0, len(usable), settings.batch_size):
            batch = usable[start : start + settings.batch_size]
            began = time.perf_counter()
            masked = {r: np.stack([p.masked[r] for p in batch]) for r in hallucinator.resolutions}
            mask = {r: np.stack([p.mask[r] for p in batch]) for r in hallucinator.resolutions}
            frames = list(hallucinator.from_pyramid(masked, mask))
            seconds["generator"] += time.perf_counter() - began
            outputs.extend(frames)
            pending.append(encoder.submit(_encode_batch, frames, settings))
        began = time.perf_counter()
        batches = [future.result() for future in pending]
        seconds["wait_for_encoder"] += time.perf_counter() - began
    seconds["encode"] += sum(took for _, took in batches)
    return outputs, [data for encoded, _ in batches for data in encoded], seconds


def _encode_batch(frames: list[np.ndarray], settings: ShardSettings) -> tuple[list[bytes], float]:
    began = time.perf_counter()
    encoded = [encode_frame(frame, settings.image_format, settings.webp_quality) for frame in frames]
    return encoded, time.perf_counter() - began


def build_shard(
    shard: str, results: list[PhotoResult], hallucinator, model: ResolvedModel, settings: ShardSettings, staged: Path
) -> tuple[pd.DataFrame, pd.DataFrame, Counter, list[tuple[np.ndarray, np.ndarray]]]:
    """Stage one shard in `staged`; returns its manifest, its quarantine, the seconds per phase and
    (masked, output) pairs of its first frames (for the sample grid)."""
    started = time.perf_counter()
    reasons = judge(results, settings.validate)
    usable = [r for r in results if r.photo.relative_path not in reasons]
    validated = time.perf_counter() - started
    outputs, encoded, seconds = hallucinate_and_encode(usable, hallucinator, settings)
    seconds["validate"], started = validated, time.perf_counter()
    ext = EXTENSIONS[settings.image_format]
    rows = []
    try:
        for result, data in zip(usable, encoded):
            frame_path = f"frames/{result.photo.relative_path}.{ext}"
            write_file(staged / frame_path, data)
            rows.append(_manifest_row(result, f"shards/{shard}/{frame_path}", model, settings.size_px, shard))
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        quarantine = _quarantine(results, reasons, shard)
        write_file(staged / "manifest.parquet", _parquet_bytes(manifest))
        write_file(staged / "quarantine.parquet", _parquet_bytes(quarantine))
    except OSError as err:
        raise ShardWriteFailed(
            f"shard {shard}: writing into {staged} failed ({err}); nothing of this shard was kept "
            "(its staging folder is removed), the finished shards are kept: free the space and run again"
        ) from err
    seconds["write"] = time.perf_counter() - started
    return manifest, quarantine, seconds, [(r.masked[settings.size_px], o) for r, o in zip(usable, outputs)][:16]


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


__all__ = ["MANIFEST_COLUMNS", "ShardSettings", "ShardWriteFailed", "build_shard"]
