"""LPIPS (Zhang et al. 2018, v0.1, AlexNet trunk): the standard learned perceptual distance.

It needs two weights files no package here ships together, so both are configured:
  - evaluate.lpips_backbone_weights: torchvision's ImageNet AlexNet state dict
    (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth);
  - evaluate.lpips_linear_weights: the per-layer linear heads calibrated on human judgements,
    `lpips/weights/v0.1/alex.pth` inside the `lpips` package on PyPI.
Without them evaluation reports its labelled, non-standard substitute instead. One
implementation serves both users: evaluation's perceptual score (facectx.evaluation.lpips) and
the perceptual loss term (losses.perceptual_network lpips), which is why it lives with the models.

The computation follows the reference implementation (the `lpips` package), which a test checks
this one against: inputs in [-1, 1], a fixed shift and scale, features after each of AlexNet's
five ReLUs, unit-normalised along channels, squared differences weighted by the linear heads,
averaged over space, summed over layers.
"""

from __future__ import annotations

import torch
from torch import nn

from facectx.weights import WeightsError, load_state_dict, load_weights_into

# AlexNet `features` indices that end each of LPIPS's five slices (after relu1 ... relu5).
SLICE_ENDS = (2, 5, 8, 10, 12)
CHANNELS = (64, 192, 384, 256, 256)
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class LpipsNetwork(nn.Module):
    """`distance(a, b)`: LPIPS of (B, 3, H, W) images in [-1, 1] -> (B,); fixed weights, in eval
    mode, differentiable in its inputs (the loss term back-propagates through it)."""

    def __init__(self, backbone_weights: str, linear_weights: str, device="cpu"):
        super().__init__()
        import torchvision  # lazy: only with LPIPS weights configured, and slow to import

        alexnet = load_weights_into(
            torchvision.models.alexnet(weights=None), backbone_weights, "a torchvision AlexNet state dict"
        )
        self.features = alexnet.features[: SLICE_ENDS[-1]]
        for k, head in enumerate(_linear_heads(load_state_dict(linear_weights), linear_weights)):
            self.register_buffer(f"head{k}", head.view(1, -1, 1, 1))
        self.register_buffer("shift", SHIFT.clone())
        self.register_buffer("scale", SCALE.clone())
        self.to(device).eval().requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for k, (fa, fb) in enumerate(zip(self.layers(a), self.layers(b))):
            diff = (_unit_channels(fa) - _unit_channels(fb)) ** 2
            total = total + (diff * getattr(self, f"head{k}")).sum(1).mean(dim=(1, 2))
        return total

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each of AlexNet's five ReLUs (not normalised)."""
        x = (x - self.shift) / self.scale
        outputs, start = [], 0
        for end in SLICE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)  # the reference's normalize_tensor


def _linear_heads(state: dict[str, torch.Tensor], path: str) -> list[torch.Tensor]:
    """The reference stores head k as `lin{k}.model.1.weight` (dropout at .0), shape (1, C, 1, 1)."""
    heads = []
    for k, channels in enumerate(CHANNELS):
        weight = state.get(f"lin{k}.model.1.weight")
        if weight is None or weight.shape != (1, channels, 1, 1):
            found = None if weight is None else tuple(weight.shape)
            raise WeightsError(
                f"{path} is not LPIPS v0.1 AlexNet linear weights: lin{k}.model.1.weight "
                f"should be (1, {channels}, 1, 1), found {found}"
            )
        heads.append(weight.reshape(channels).float())
    return heads
