"""ProGAN's layers (Karras et al. 2018, section 4): equalized learning rate, pixel norm, the
minibatch-stddev feature, and the fade-in of a newly grown level.

Equalized learning rate: every weight is stored drawn from N(0, 1) and multiplied at run time by
He's constant gain / sqrt(fan_in). Adam normalises each parameter's step by its own gradient
scale, so a layer with a large fan-in would otherwise learn as fast (relative to its weights'
size) as a small one only by accident; with the scale applied at run time every weight moves at
the same relative speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HE_GAIN = math.sqrt(2.0)  # for layers followed by a (leaky) ReLU; output layers (to-RGB, the score) use 1


class EqualizedConv2d(nn.Module):
    """A convolution whose weights are stored N(0, 1) and scaled by gain / sqrt(fan_in) at run
    time; biases start at 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, padding: int = 0, gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel * kernel)  # not a parameter: never trained
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Each pixel's feature vector divided by its root mean square over the channels (ProGAN's
    generator normalisation, in place of batch norm: no batch statistics, so eval mode computes
    what training computed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def conv_lrelu(in_channels: int, out_channels: int, kernel: int = 3, pixel_norm: bool = False) -> nn.Sequential:
    """ProGAN's unit: an equalized conv ("same" padding), leaky ReLU 0.2, pixel norm in the generator."""
    layers = [EqualizedConv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, PixelNorm()) if pixel_norm else nn.Sequential(*layers)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """x with one more channel: the standard deviation of each feature over a group of images,
    averaged over features and pixels (ProGAN section 3). The critic sees how varied the batch
    is, so a generator that paints every image alike is told apart from photos.

    Groups are runs of consecutive images (ProGAN's code strides them: image i in group
    i % (B/G); the batch is shuffled, so either is a random grouping). Consecutive, a rank's
    contiguous share of the batch under DDP holds whole groups, and W processes compute what one
    does whenever the per-rank batch is a multiple of the group size."""
    batch = x.shape[0]
    group = max(g for g in range(1, min(group_size, batch) + 1) if batch % g == 0)  # shapes only: no sync
    y = x.float().reshape(-1, group, *x.shape[1:])  # [B/G, G, C, H, W]
    std = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B/G]
    feature = std.to(x.dtype).repeat_interleave(group)[:, None, None, None].expand(batch, 1, *x.shape[2:])
    return torch.cat([x, feature], dim=1)


class FadesIn(nn.Module):
    """The fade-in of a model's newest level (ProGAN section 3): alpha rises linearly from 0 to 1
    over the first fade_in_fraction of a stage's steps, blending the new level's path with the
    previous level's. Shared by the generator and its critic, which the trainer tells the same
    step, so the two fade together."""

    def __init__(self):
        super().__init__()
        self.register_buffer("alpha", torch.ones(()))  # in checkpoints: 1 once faded in
        # Whether alpha < 1, told with alpha (`set_alpha`), so that a training step never reads the
        # tensor back (a sync, which a CUDA graph cannot record); None: read it (a loaded model).
        self.fading: bool | None = None

    # The previous level's paths run only while fading: DDP must look for unused parameters.
    find_unused_parameters = True
    # Its weights grow from the previous stage's checkpoint (training.state.load_previous_stage).
    inherits_previous_stage = True

    def set_alpha(self, value: float) -> None:
        self.alpha.fill_(value)
        self.fading = value < 1.0

    def set_step(self, step: int, total_steps: int, fade_in_fraction: float, grows: bool) -> None:
        """alpha at this step; 1 throughout when the stage does not grow from a previous one."""
        if not grows:
            self.set_alpha(1.0)
            return
        fade_steps = max(1, int(fade_in_fraction * total_steps))
        self.set_alpha(min(1.0, step / fade_steps))

    @property
    def step_variant(self) -> bool | None:
        """What tells one recorded CUDA graph of the step from another: fading or not."""
        return self.fading

    def is_fading(self, grown: bool) -> bool:
        """grown: the model has a level above its first, so there is something to fade from."""
        return grown and (float(self.alpha) < 1.0 if self.fading is None else self.fading)

    def blend(self, new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.alpha * new + (1 - self.alpha) * previous
