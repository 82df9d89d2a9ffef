"""Classical ways to fill in a face's context, run on the same test photos as the GANs.

Each baseline maps (masked uint8 (B, H, W, 3), mask uint8 (B, H, W) in {0, 1}) to a full
uint8 image with the face pasted back, exactly like the models' outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from skimage.restoration import inpaint_biharmonic

Hallucinator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _paste(generated: np.ndarray, masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
    keep = mask[..., None].astype(bool)
    return np.where(keep, masked, generated).astype(np.uint8)


def opencv_inpaint(method: int, radius: int = 5) -> Hallucinator:
    def run(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
        holes = ((1 - mask) * 255).astype(np.uint8)
        return np.stack([cv2.inpaint(m, h, radius, method) for m, h in zip(masked, holes)])

    return run


def biharmonic(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's biharmonic inpainting (smooth continuation of the face's border colours)."""
    out = []
    for m, k in zip(masked, mask):
        filled = inpaint_biharmonic(m.astype(np.float64) / 255.0, k == 0, channel_axis=-1)
        out.append(_paste(np.clip(filled * 255.0 + 0.5, 0, 255).astype(np.uint8), m, k))
    return np.stack(out)


def mean_context(mean_image: np.ndarray) -> Hallucinator:
    """The masked face pasted into the mean training frame."""

    def run(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _paste(np.broadcast_to(mean_image, masked.shape), masked, mask)

    return run


BASELINES = {
    "OpenCV Telea": lambda mean: opencv_inpaint(cv2.INPAINT_TELEA),
    "OpenCV Navier-Stokes": lambda mean: opencv_inpaint(cv2.INPAINT_NS),
    "scikit-image biharmonic": lambda mean: biharmonic,
    "mean training context": mean_context,
}
