"""Loading weight files safely: safetensors, or torch files with weights_only=True (no pickled
code runs). Errors name the file."""
from __future__ import annotations

import os

import torch


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or not a state dict."""


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device=device)
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"cannot read weights from {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def weights_label(path: str | os.PathLike) -> str:
    """How reports and the registry name a weights file: its name and content hash, so the same
    weights at different paths (a laptop, a pod) count as the same measurement."""
    from facectx.io_utils import sha256_file

    return f"{os.path.basename(str(path))} sha256:{sha256_file(path)[:12]}"
