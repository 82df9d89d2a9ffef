"""The plain data path the training-throughput benchmark compares the trainer against: a torch
Dataset reading one example at a time from the memory-mapped shards, batched by a standard
DataLoader with worker processes, then moved to the device and converted like ResidentShards.
It reads exactly the rows ResidentShards holds (same subset, same seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facectx.data.shards import IMAGE_ARRAYS, SplitShards, split_folder
from facectx.tensors import image_tensor, mask_tensor
from facectx.training.data import Batch


class ShardDataset(torch.utils.data.Dataset):
    """Plain per-example reads from memory-mapped shards (the baseline data path)."""

    def __init__(
        self, prepared_dir: str | Path, split: str, resolutions: tuple[int, ...], max_rows: int = 0, seed: int = 0
    ):
        split_folder(prepared_dir, split)  # DataError when the split was never prepared
        self.shards = SplitShards(prepared_dir, split)
        self.resolutions = tuple(resolutions)
        self.source_rows = self.shards.subset(max_rows, seed)  # the same rows ResidentShards would hold
        self.rows = len(self.source_rows)
        self._arrays = None  # opened lazily in each worker process

    def _open(self):
        if self._arrays is None:
            self._arrays = {(kind, r): self.shards.array(kind, r) for kind in IMAGE_ARRAYS for r in self.resolutions}
            self._arrays[("landmarks", 0)] = self.shards.array("landmarks")
        return self._arrays

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict:
        arrays = self._open()
        i = self.source_rows[i]
        item = {
            f"{kind}_{r}": torch.from_numpy(np.array(a[i])) for (kind, r), a in arrays.items() if kind != "landmarks"
        }
        item["landmarks"] = torch.from_numpy(np.array(arrays[("landmarks", 0)][i]))
        return item


def batch_from_items(items: dict, resolutions: tuple[int, ...], device: torch.device) -> Batch:
    """A collated ShardDataset batch, moved to the device and converted like ResidentShards."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    return Batch(
        masked={r: image_tensor(move(items[f"masked_{r}"])) for r in resolutions},
        mask={r: mask_tensor(move(items[f"mask_{r}"])) for r in resolutions},
        target={r: image_tensor(move(items[f"target_{r}"])) for r in resolutions},
        landmarks=move(items["landmarks"]).float(),
        valid={r: mask_tensor(move(items[f"valid_{r}"])) for r in resolutions},
    )
