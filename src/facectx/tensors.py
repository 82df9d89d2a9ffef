"""Small torch helpers shared by training, inference and evaluation: where to run, and the one
conversion of uint8 images and masks into the tensors the models take."""

from __future__ import annotations

import torch


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """A params device setting ("auto", "cpu", "cuda", ...) as a torch device; `setting` names it in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} is cuda but no CUDA device is available")
    return torch.device(name)


def image_tensor(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]; the permuted view keeps NHWC memory (channels_last).
    Always a new tensor (the arithmetic is done in place on the copy)."""
    return x.permute(0, 3, 1, 2).to(torch.float32, copy=True).div_(127.5).sub_(1.0)


def mask_tensor(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHW 0..255 -> float N1HW in [0, 1]; always a new tensor."""
    return x.unsqueeze(1).to(torch.float32, copy=True).div_(255.0)
