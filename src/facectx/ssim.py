"""Structural similarity (Wang et al. 2004) with the standard 11x11 Gaussian window, sigma 1.5:
the one SSIM that training (validation) and evaluation both use."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window(channels: int, device, dtype, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of (B, C, H, W) images in [0, data_range], averaged over channels: (B, H', W').
    Images smaller than the window use a window of their own size."""
    x, y = x.float(), y.float()
    channels = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    w = _window(channels, x.device, x.dtype, size=size, sigma=1.5 * size / 11)
    mu_x, mu_y = F.conv2d(x, w, groups=channels), F.conv2d(y, w, groups=channels)
    sxx = F.conv2d(x * x, w, groups=channels) - mu_x**2
    syy = F.conv2d(y * y, w, groups=channels) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=channels) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image: (B,)."""
    return ssim_map(x, y, data_range).flatten(1).mean(dim=1)
