"""Evaluation metrics, registered by name. Per-photo metrics take uint8 outputs, targets and the
face mask; set metrics (the Fréchet distance) take feature sets. Evaluation metrics are kept
apart from training losses: nothing here is imported by the trainer."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from facectx.evaluation.ssim import ssim_map

PerPhoto = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
PER_PHOTO: dict[str, PerPhoto] = {}


def per_photo_metric(name: str):
    def register(fn: PerPhoto) -> PerPhoto:
        PER_PHOTO[name] = fn
        return fn
    return register


def unit_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def _context(mask: np.ndarray) -> torch.Tensor:
    """1 where the pixel was hallucinated (outside the face mask)."""
    return torch.from_numpy((np.asarray(mask) < 128).astype(np.float32))


@per_photo_metric("ssim")
def ssim_whole(output, target, mask):
    return ssim_map(unit_images(output), unit_images(target)).flatten(1).mean(1).numpy()


@per_photo_metric("ssim_context")
def ssim_context(output, target, mask):
    """SSIM averaged over the hallucinated region only (the map is cropped like the valid conv)."""
    s = ssim_map(unit_images(output), unit_images(target))
    crop = (mask.shape[1] - s.shape[1]) // 2
    region = _context(mask)[:, crop:crop + s.shape[1], crop:crop + s.shape[2]]
    return ((s * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1)).numpy()


def _psnr(output, target, weight) -> np.ndarray:
    err = ((unit_images(output) - unit_images(target)) ** 2).mean(1)  # per pixel
    mse = (err * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy()


@per_photo_metric("psnr")
def psnr_whole(output, target, mask):
    return _psnr(output, target, torch.ones(mask.shape))


@per_photo_metric("psnr_context")
def psnr_context(output, target, mask):
    return _psnr(output, target, _context(mask))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    from scipy import linalg

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular covariances: regularise, as pytorch-fid does
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
