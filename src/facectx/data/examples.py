"""One photo's training example, built from the photo and its 68 landmarks: the square frame
around the face, the face mask, the masked face, the validity mask (which frame pixels lie inside
the photo) and the pyramid of each at every resolution.

`prepare` builds every photo's example this way, `facectx hallucinate` and serving build a new
photo's, and an air-gapped machine rebuilds them from a pack of full-size frames
(`example_from_frame`), so all three see exactly the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facectx.config import CropConfig
from facectx.data.masks import (
    crop_to_frame,
    downsample,
    face_frame,
    frame_validity,
    hull_mask,
    mirror_points,
    points_in_frame,
)


@dataclass(frozen=True)
class Example:
    """One prepared photo: arrays keyed by resolution."""

    target: dict[int, np.ndarray]
    masked: dict[int, np.ndarray]
    mask: dict[int, np.ndarray]
    valid: dict[int, np.ndarray]  # 255 where the frame lies inside the photo (frame_validity)
    landmarks: np.ndarray  # (68, 2) in the largest frame

    def mirrored(self) -> Example:
        flip = lambda arrays: {r: np.ascontiguousarray(a[:, ::-1]) for r, a in arrays.items()}  # noqa: E731
        size = max(self.target)
        return Example(
            flip(self.target), flip(self.masked), flip(self.mask), flip(self.valid), mirror_points(self.landmarks, size)
        )


def build_example(rgb: np.ndarray, points: np.ndarray, crop: CropConfig, resolutions: tuple[int, ...]) -> Example:
    frame = face_frame(points, crop)
    target = crop_to_frame(rgb, frame, crop.size_px)
    valid = frame_validity(frame, rgb.shape[1], rgb.shape[0], crop.size_px)
    return example_from_frame(target, points_in_frame(points, frame, crop.size_px), resolutions, valid)


def example_from_frame(
    target: np.ndarray, frame_points: np.ndarray, resolutions: tuple[int, ...], valid: np.ndarray
) -> Example:
    """Mask, masked face and pyramid from the full-size frame, its landmarks and its validity
    (also how an air-gapped machine rebuilds the shards from a pack of frames)."""
    size = target.shape[0]
    mask = hull_mask(frame_points, size)
    masked = target * mask[:, :, None]
    mask255 = mask * 255
    example = Example({size: target}, {size: masked}, {size: mask255}, {size: valid}, frame_points)
    for r in resolutions:
        if r != size:
            example.target[r] = downsample(target, r)
            example.masked[r] = downsample(masked, r)
            example.mask[r] = downsample(mask255, r)
            example.valid[r] = downsample(valid, r)
    return example
