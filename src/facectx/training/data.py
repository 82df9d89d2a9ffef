"""Training data from the prepared shards.

`ResidentShards` moves a split's uint8 arrays to the device once (the whole LFW train split at
every resolution is ~2 GB), so a step only indexes and converts on the device: no host decoding,
no per-step copies. (The plain DataLoader path it is measured against lives in
benchmarks/plain_loader.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facectx.data.shards import DataError, SplitShards, split_folder
from facectx.tensors import image_tensor, mask_tensor

__all__ = ["Batch", "DataError", "ResidentShards"]


@dataclass
class Batch:
    masked: dict[int, torch.Tensor]  # (B, 3, r, r) in [-1, 1], black (-1) outside the face
    mask: dict[int, torch.Tensor]  # (B, 1, r, r) in [0, 1]
    target: dict[int, torch.Tensor]  # (B, 3, r, r) in [-1, 1]
    landmarks: torch.Tensor  # (B, 68, 2), pixels of the largest frame
    valid: dict[int, torch.Tensor]  # (B, 1, r, r) in [0, 1]: 0 where the frame ran past the photo


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
        split_folder(prepared_dir, split)  # DataError when the split was never prepared
        shards = SplitShards(prepared_dir, split)
        missing = sorted(set(resolutions) - set(shards.resolutions))
        if missing:
            raise DataError(f"prepared data in {prepared_dir} lack resolutions {missing}")
        self.resolutions = tuple(resolutions)
        self.frame_size = shards.frame_size

        self.source_rows = shards.subset(max_rows, seed)  # row numbers in the split's shards
        every_row = len(self.source_rows) == len(shards.array("landmarks"))

        def load(kind: str, resolution: int | None = None) -> torch.Tensor:
            array = shards.array(kind, resolution)
            array = array if every_row else array[self.source_rows]
            return torch.from_numpy(np.array(array)).to(device)  # a writable copy, not the read-only map

        self.target = {r: load("target", r) for r in resolutions}
        self.masked = {r: load("masked", r) for r in resolutions}
        self.mask = {r: load("mask", r) for r in resolutions}
        if not shards.has("valid", max(resolutions)):
            raise DataError(
                f"prepared data in {prepared_dir} have no validity masks (valid_<r>.npy): they were prepared "
                f"by an older facectx; run `facectx prepare` (dvc repro prepare) again"
            )
        self.valid = {r: load("valid", r) for r in resolutions}
        self.landmarks = load("landmarks")
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
