"""Training data from the prepared shards.

`ResidentShards` moves a split's uint8 arrays to the device once (the whole LFW train split at
every resolution is ~2 GB), so a step only indexes and converts on the device: no host decoding,
no per-step copies. (The plain DataLoader path it is measured against lives in
benchmarks/plain_loader.py.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facectx.tensors import image_tensor, mask_tensor


class DataError(RuntimeError):
    """Prepared data are missing or do not match what training needs."""


@dataclass
class Batch:
    masked: dict[int, torch.Tensor]  # (B, 3, r, r) in [-1, 1], black (-1) outside the face
    mask: dict[int, torch.Tensor]  # (B, 1, r, r) in [0, 1]
    target: dict[int, torch.Tensor]  # (B, 3, r, r) in [-1, 1]
    landmarks: torch.Tensor  # (B, 68, 2), pixels of the largest frame
    valid: dict[int, torch.Tensor]  # (B, 1, r, r) in [0, 1]: 0 where the frame ran past the photo


def split_folder(prepared_dir: str | Path, split: str) -> Path:
    folder = Path(prepared_dir) / split
    if not (folder / "index.parquet").is_file():
        raise DataError(f"no prepared {split} split in {prepared_dir}: run `facectx prepare` (dvc repro prepare) first")
    return folder


def subset_rows(index: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row numbers of a seeded random subset of `n` rows spread over identities, sorted.

    The shards are in path order, so their first rows are a few surnames (the first 3,000 LFW
    training rows: all "A", 150 of them one person). Here photos are dealt round-robin over the
    identities in a seeded random order: one photo of every person first, then a second photo
    of those who have one, ..., so n photos cover min(n, identities) people. A photo's rows stay
    together (in the train split a photo and its mirrored copy, so a subset keeps the split's
    left/right balance); n photos' rows are cut to exactly n rows. n = 0 (or n >= rows): every
    row. Sorted, so memory-mapped reads stay sequential."""
    if n <= 0 or n >= len(index):
        return np.arange(len(index))
    rng = np.random.default_rng(seed)
    rows_of = index.groupby("relative_path", sort=False).indices  # photo -> its row positions
    photos = index.drop_duplicates("relative_path")[["relative_path", "identity"]]
    photos = photos.iloc[rng.permutation(len(photos))]  # random photo order within each identity
    people = np.sort(photos.identity.unique())
    person_order = pd.Series(rng.permutation(len(people)), index=people)
    round_ = photos.groupby("identity", sort=False).cumcount().to_numpy()  # 0 for a person's first photo, ...
    dealt = photos.relative_path.to_numpy()[np.lexsort((person_order[photos.identity].to_numpy(), round_))]
    rows = np.concatenate([rows_of[photo] for photo in dealt])[:n]
    return np.sort(rows)


def split_rows(folder: Path, n: int, seed: int) -> np.ndarray:
    """`subset_rows` of a prepared split's index."""
    return subset_rows(pd.read_parquet(folder / "index.parquet", columns=["relative_path", "identity"]), n, seed)


def data_version(prepared_dir: str | Path) -> str:
    """A short fingerprint of the prepared data: meta.json plus each split's index."""
    import hashlib

    digest = hashlib.sha256()
    prepared_dir = Path(prepared_dir)
    for path in [prepared_dir / "meta.json", *sorted(prepared_dir.glob("*/index.parquet"))]:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class ResidentShards:
    """One split's arrays at the given resolutions, as uint8 tensors on `device`: every row, or
    `max_rows` of them chosen by `subset_rows` with `seed`."""

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        resolutions: tuple[int, ...],
        device: torch.device,
        max_rows: int = 0,
        seed: int = 0,
    ):
        folder = split_folder(prepared_dir, split)
        meta = json.loads((Path(prepared_dir) / "meta.json").read_text())
        missing = sorted(set(resolutions) - set(meta["resolutions"]))
        if missing:
            raise DataError(f"prepared data in {prepared_dir} lack resolutions {missing}")
        self.resolutions = tuple(resolutions)
        self.frame_size = max(meta["resolutions"])

        self.source_rows = split_rows(folder, max_rows, seed)  # row numbers in the split's shards
        every_row = len(self.source_rows) == len(np.load(folder / "landmarks.npy", mmap_mode="r"))

        def load(name: str) -> torch.Tensor:
            array = np.load(folder / name, mmap_mode="r")
            array = array if every_row else array[self.source_rows]
            return torch.from_numpy(np.array(array)).to(device)  # a writable copy, not the read-only map

        self.target = {r: load(f"target_{r}.npy") for r in resolutions}
        self.masked = {r: load(f"masked_{r}.npy") for r in resolutions}
        self.mask = {r: load(f"mask_{r}.npy") for r in resolutions}
        if not (folder / f"valid_{max(resolutions)}.npy").is_file():
            raise DataError(
                f"prepared data in {prepared_dir} have no validity masks (valid_<r>.npy): they were prepared "
                f"by an older facectx; run `facectx prepare` (dvc repro prepare) again"
            )
        self.valid = {r: load(f"valid_{r}.npy") for r in resolutions}
        self.landmarks = load("landmarks.npy")
        self.rows = len(self.landmarks)
        if self.rows == 0:
            raise DataError(f"the {split} split in {prepared_dir} is empty")

    def batch(self, index: torch.Tensor) -> Batch:
        index = index.to(self.landmarks.device)
        return Batch(
            masked={r: image_tensor(t[index]) for r, t in self.masked.items()},
            mask={r: mask_tensor(t[index]) for r, t in self.mask.items()},
            target={r: image_tensor(t[index]) for r, t in self.target.items()},
            landmarks=self.landmarks[index].float(),
            valid={r: mask_tensor(t[index]) for r, t in self.valid.items()},
        )
