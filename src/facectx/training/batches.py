"""Which training rows each step of a stage takes: the stage's batch size, each process's share
of it, the epoch's order (a function of seed, stage and epoch alone, so a resumed run takes the
same batches), and the stage's training and validation rows on the device."""

from __future__ import annotations

from pathlib import Path

import torch

from facectx.config import TrainConfig
from facectx.training.data import DataError, ResidentShards


def stage_batch_size(train: TrainConfig, stage: int) -> int:
    """The batch size of one stage (train.batch_size is aligned with train.stages)."""
    return train.batch_size[list(train.stages).index(stage)]


def rank_batch_size(batch_size: int, world: int, stage: int) -> int:
    """Each process's share of a step's (global) batch; the batch must split evenly, or the
    processes' mean losses would not average to the global batch's."""
    if batch_size % world:
        raise ValueError(
            f"train.batch_size {batch_size} (stage {stage}) is not divisible by the {world} training "
            f"processes: each takes an equal share of every step's batch; use a multiple of {world}"
        )
    return batch_size // world


def epoch_order(rows: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + stage * 1_009 + epoch)
    return torch.randperm(rows, generator=generator)


def rank_rows(order: torch.Tensor, b: int, batch_size: int, rank: int, rank_batch: int) -> torch.Tensor:
    """This rank's contiguous share of step b's batch (the whole batch with one process):
    every rank has the same epoch order, so the shares tile the global batch."""
    start = b * batch_size + rank * rank_batch
    return order[start : start + rank_batch]


def load_stage_data(
    prepared_dir: Path,
    resolutions: tuple[int, ...],  # the prepared pyramid's levels; the stage needs those up to its own
    stage: int,
    train: TrainConfig,  # max_train_rows, val_rows, seed
    frame_size: int,  # crop.size_px: the frame the landmarks are pixels of
    device: torch.device,
) -> tuple[ResidentShards, ResidentShards]:
    """The stage's training and validation rows, on the device."""
    needed = tuple(r for r in resolutions if r <= stage)
    train_data = ResidentShards(prepared_dir, "train", needed, device, train.max_train_rows, seed=train.seed)
    # Validation rows do not follow train.seed: runs with different seeds are scored on the same photos.
    val_data = ResidentShards(prepared_dir, "val", needed, device, train.val_rows, seed=0)
    if train_data.frame_size != frame_size:  # the landmarks are pixels of that frame
        raise DataError(
            f"prepared data in {prepared_dir} have {train_data.frame_size}-px frames, "
            f"but crop.size_px is {frame_size}: prepare them again"
        )
    return train_data, val_data


def steps_per_epoch(rows: int, batch_size: int, stage: int) -> int:
    steps = rows // batch_size
    if steps == 0:
        raise ValueError(f"train.batch_size {batch_size} (stage {stage}) exceeds the {rows} training rows")
    return steps
