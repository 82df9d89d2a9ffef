"""The far side of an air-gap pack: prepared data (the shards `prepare` writes) rebuilt from a
packed set's frames, photo landmarks and photo sizes (see facectx.airgap.format for the layout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.airgap.format import PackError, read_manifest
from facectx.airgap.frames import decode_frames, frame_landmarks, frame_validities
from facectx.config import CropConfig
from facectx.data.examples import example_from_frame
from facectx.data.shards import SplitWriter, read_meta, write_meta
from facectx.data.splits import SPLITS


def unpack_set(pack: str | os.PathLike, name: str, out: str | os.PathLike, share_from: Path | None = None) -> Path:
    """Rebuild prepared data (the shards `prepare` writes) for one packed set into `out`.

    Splits the set lacks are linked from `share_from` (an extra test set borrows the main set's
    validation and training splits: the real-vs-real floor and the mean-context baseline)."""
    pack, out = Path(pack), Path(out)
    manifest = read_manifest(pack)
    crop = CropConfig(**manifest["crop"])
    if name not in manifest["sets"]:
        raise PackError(f"{pack}: no test set {name!r} (sets: {sorted(manifest['sets'])})")
    resolutions = tuple(manifest["resolutions"])
    rows = {}
    for split in SPLITS:
        packed = pack / "sets" / name / split
        if not packed.is_dir():
            if share_from is not None and (share_from / split).is_dir():
                (out / split).parent.mkdir(parents=True, exist_ok=True)
                (out / split).symlink_to((share_from / split).resolve(), target_is_directory=True)
                rows[split] = read_meta(share_from)["rows"][split]
            continue
        mirror = manifest["mirror"] and split == "train"
        rows[split] = _rebuild_split(packed, out / split, crop, resolutions, mirror)
    derived = {  # Derived data: training on it is not training on the home data version.
        "from_pack": manifest["id"],
        "from_data_version": manifest["data_version"],
        "set": name,
        "encoding": manifest["encoding"],
        "psnr_db": {s: v.get("psnr_db") for s, v in manifest["sets"][name].items() if isinstance(v, dict)},
    }
    write_meta(out, resolutions, manifest["crop"], manifest["mirror"], rows, derived)
    return out


def _rebuild_split(packed: Path, out: Path, crop: CropConfig, resolutions: tuple[int, ...], mirror: bool) -> int:
    """One packed split's shards, written into `out` (with each row's mirrored copy when
    `mirror`); returns the rows written."""
    frames = decode_frames((packed / "frames.bin").read_bytes(), np.load(packed / "frames.offsets.npy"), str(packed))
    with np.load(packed / "photo_points.npz") as stored:
        landmarks = frame_landmarks(stored["points"], crop)
        valid = frame_validities(stored["points"], stored["sizes"], crop)
    index = pd.read_parquet(packed / "index.parquet")
    if not len(frames) == len(landmarks) == len(index):
        raise PackError(f"{packed}: {len(frames)} frames, {len(landmarks)} landmark rows, {len(index)} index rows")
    writer = SplitWriter(out, resolutions, max(len(frames) * (2 if mirror else 1), 1))
    for frame, points, inside, row in zip(frames, landmarks, valid, index.itertuples()):
        example = example_from_frame(frame, points, resolutions, inside)
        writer.add(example, row.relative_path, row.identity, mirrored=False)
        if mirror:
            writer.add(example.mirrored(), row.relative_path, row.identity, mirrored=True)
    return writer.close()
