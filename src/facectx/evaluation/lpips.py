"""LPIPS as evaluation's perceptual score: the network (facectx.models.lpips) on uint8 photos."""

from __future__ import annotations

import numpy as np
import torch

from facectx.models.lpips import LpipsNetwork
from facectx.weights import weights_label


class LpipsDistance:
    """`perceptual_distance(a, b)` on uint8 (B, H, W, 3) images -> (B,) LPIPS."""

    def __init__(self, backbone_weights: str, linear_weights: str, device="cpu"):
        self.network = LpipsNetwork(backbone_weights, linear_weights, device)
        self.device = device
        self.perceptual_name = (
            f"LPIPS v0.1 AlexNet ({weights_label(backbone_weights)}, {weights_label(linear_weights)})"
        )

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (B, 3, H, W) in [-1, 1]."""
        return self.network.distance(a, b)

    @torch.no_grad()
    def perceptual_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.distance(_signed_unit(a, self.device), _signed_unit(b, self.device)).cpu().numpy()


def _signed_unit(images: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().to(device)
    return x / 127.5 - 1.0
