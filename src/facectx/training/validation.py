"""Scoring a stage's generator on the validation rows (after each epoch): SSIM and identity
distance of its output to the photos, and a grid of samples to look at."""

from __future__ import annotations

import numpy as np
import torch

from facectx.losses import FaceFeatures, identity_distance, to_unit, within_photo
from facectx.ssim import ssim
from facectx.training.data import ResidentShards


def sample_grid(masked: torch.Tensor, output: torch.Tensor, target: torch.Tensor, frame: int) -> np.ndarray:
    """Rows of masked | output | target, enlarged (nearest) to the frame size: uint8 HWC."""

    def show(x):
        return torch.nn.functional.interpolate(to_unit(x.float()).clamp(0, 1), size=(frame, frame), mode="nearest")

    rows = torch.cat([show(masked), show(output), show(target)], dim=3)  # side by side
    grid = torch.cat(list(rows), dim=1)  # stacked
    return (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def validate(
    generator: torch.nn.Module,  # in eval mode
    face: FaceFeatures,  # the identity network
    data: ResidentShards,  # the validation rows
    device: torch.device,  # where data and generator are
    stage: int,
    batch_size: int,
    bf16: bool,  # under bf16 autocast (CUDA)
    grid_rows: int,  # rows of the sample grid
    frame_size: int,  # crop.size_px: the grid's images are enlarged to it
) -> tuple[dict[str, float], np.ndarray]:
    s, rows = stage, data.rows
    ssims, distances = [], []
    for start in range(0, rows, batch_size):
        batch = data.batch(torch.arange(start, min(rows, start + batch_size), device=device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            fake = within_photo(generator(batch.masked, batch.mask)[s].float(), batch.target[s], batch.valid[s])
        ssims.append(ssim(to_unit(fake), to_unit(batch.target[s])))
        distances.append(
            identity_distance(face.embedding(fake, batch.landmarks), face.embedding(batch.target[s], batch.landmarks))
        )
        if start == 0:
            grid = sample_grid(batch.masked[s][:grid_rows], fake[:grid_rows], batch.target[s][:grid_rows], frame_size)
    return {
        "val_ssim": float(torch.cat(ssims).mean()),
        "val_identity_distance": float(torch.cat(distances).mean()),
    }, grid
