"""Loading weight files safely: safetensors, or torch files with weights_only=True (no pickled
code runs). Errors name the file. Every weights file facectx reads (except its own checkpoints,
facectx.checkpoint) goes through load_state_dict or load_weights_into."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from facectx.io_utils import sha256_file

# torch and safetensors are imported where weights are loaded: the data steps import the error
# classes (through facectx.data.landmarks) and do not load torch.
if TYPE_CHECKING:
    import torch


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or not a state dict."""


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    import torch

    path = str(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device=device)
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # corrupt, truncated, or not a weights file at all
        raise WeightsError(f"cannot read weights from {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def load_weights_into(
    module: torch.nn.Module, path: str | os.PathLike, what: str, *, prefix: str = "", device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load the state dict in `path` into `module` (strictly), or raise WeightsError naming the file
    and `what` it should have held (e.g. "a torchvision AlexNet state dict"). With `prefix`, only
    the entries under it are loaded, the prefix removed (e.g. "features." for a network's trunk)."""
    state = load_state_dict(path, device)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"{path} is not {what}: {err}") from err
    return module


def weights_label(path: str | os.PathLike) -> str:
    """How reports and the registry name a weights file: its name and content hash, so the same
    weights at different paths (a laptop, a pod) count as the same measurement."""
    return f"{os.path.basename(str(path))} sha256:{sha256_file(path)[:12]}"
