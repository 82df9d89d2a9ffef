"""Evaluation metrics, registered by name. Per-photo metrics take uint8 outputs, targets and the
face mask; set metrics (the Fréchet distance) take feature sets. Evaluation metrics are kept
apart from training losses: nothing here is imported by the trainer."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg

from facectx.ssim import ssim_map

PerPhoto = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
PER_PHOTO: dict[str, PerPhoto] = {}


def per_photo_metric(name: str):
    """Register fn(output, target, mask, valid) -> one value per photo; uint8 images (B, H, W, 3),
    the face mask and the validity mask (B, H, W) uint8 0..255. The registered metric sees the
    output with the target's pixels where the frame ran past the photo (within_photo), so nothing
    there moves it, not even through an SSIM window that straddles the photo's edge."""

    def register(fn: PerPhoto) -> PerPhoto:
        PER_PHOTO[name] = lambda output, target, mask, valid: fn(
            within_photo(output, target, valid), target, mask, valid
        )
        return fn

    return register


def unit_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def within_photo(output: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 outputs with the target's pixels where the frame ran past the photo (valid 0): what
    was never in the photo is neither rewarded nor punished by any metric."""
    weight = valid[..., None].astype(np.float32) / 255.0
    return np.round(weight * output + (1 - weight) * target).astype(np.uint8)


def _weight(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)


def _context(mask: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """1 where the pixel was hallucinated (outside the face mask) and lies inside the photo."""
    return torch.from_numpy((np.asarray(mask) < 128).astype(np.float32)) * _weight(valid)


def _ssim_mean(output, target, region: torch.Tensor) -> np.ndarray:
    """SSIM averaged over a region (the map is cropped like the valid convolution)."""
    s = ssim_map(unit_images(output), unit_images(target))
    crop = (region.shape[1] - s.shape[1]) // 2
    region = region[:, crop : crop + s.shape[1], crop : crop + s.shape[2]]
    return ((s * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1)).numpy()


@per_photo_metric("ssim")
def ssim_whole(output, target, mask, valid):
    """SSIM over the frame's pixels that lie inside the photo."""
    return _ssim_mean(output, target, _weight(valid))


@per_photo_metric("ssim_context")
def ssim_context(output, target, mask, valid):
    """SSIM over the hallucinated region inside the photo."""
    return _ssim_mean(output, target, _context(mask, valid))


def _psnr(output, target, weight) -> np.ndarray:
    err = ((unit_images(output) - unit_images(target)) ** 2).mean(1)  # per pixel
    mse = (err * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy()


@per_photo_metric("psnr")
def psnr_whole(output, target, mask, valid):
    return _psnr(output, target, _weight(valid))


@per_photo_metric("psnr_context")
def psnr_context(output, target, mask, valid):
    return _psnr(output, target, _context(mask, valid))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    with warnings.catch_warnings():  # a near-singular product is handled below; no `disp=False`: newer SciPy lacks it
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular covariances: regularise, as pytorch-fid does
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
