"""Geometry of a training example: the square frame around a face, the face mask, the pyramid.

The frame is centred on the 68-point box (moved up a little so the hair stays in view) with a
side of crop.box_scale times the box; the mask is the filled convex hull of the 68 points.
Everything is a pure function of (photo, landmarks, CropConfig) so validate and prepare agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facectx.config import CropConfig


@dataclass(frozen=True)
class Frame:
    left: int
    top: int
    side: int  # in photo pixels


def face_frame(points: np.ndarray, crop: CropConfig) -> Frame:
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    side = crop.box_scale * max(width, height)
    centre_x = (low[0] + high[0]) / 2
    centre_y = (low[1] + high[1]) / 2 - crop.box_shift_up * height
    side_px = max(1, int(round(side)))
    return Frame(int(round(centre_x - side / 2)), int(round(centre_y - side / 2)), side_px)


def outside_fraction(frame: Frame, width: int, height: int) -> float:
    """Share of the frame's area that falls outside the photo (it is padded black)."""
    inside_w = max(0, min(frame.left + frame.side, width) - max(frame.left, 0))
    inside_h = max(0, min(frame.top + frame.side, height) - max(frame.top, 0))
    return 1.0 - (inside_w * inside_h) / float(frame.side * frame.side)


def crop_to_frame(rgb: np.ndarray, frame: Frame, size: int) -> np.ndarray:
    """Cut the frame out of the photo (black outside the photo) and resize it to size x size."""
    height, width = rgb.shape[:2]
    patch = np.zeros((frame.side, frame.side, 3), dtype=np.uint8)
    src_x0, src_y0 = max(frame.left, 0), max(frame.top, 0)
    src_x1, src_y1 = min(frame.left + frame.side, width), min(frame.top + frame.side, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        patch[src_y0 - frame.top : src_y1 - frame.top, src_x0 - frame.left : src_x1 - frame.left] = rgb[
            src_y0:src_y1, src_x0:src_x1
        ]
    interpolation = cv2.INTER_AREA if frame.side >= size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def frame_validity(frame: Frame, width: int, height: int, size: int) -> np.ndarray:
    """(size, size) uint8 like a mask: 255 where the frame pixel comes wholly from the photo, 0
    where crop_to_frame padded it black (the frame ran past the photo's edge), between at the
    border. Losses and metrics ignore what lies outside: it was never in the photo."""
    return crop_to_frame(np.full((height, width, 3), 255, np.uint8), frame, size)[..., 0]


def points_in_frame(points: np.ndarray, frame: Frame, size: int) -> np.ndarray:
    return ((points - np.array([frame.left, frame.top], dtype=np.float32)) * (size / frame.side)).astype(np.float32)


def hull_mask(frame_points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8, 1 inside the convex hull of the points, 0 outside."""
    mask = np.zeros((size, size), dtype=np.uint8)
    hull = cv2.convexHull(np.round(frame_points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average to size x size (exact box averaging for power-of-two factors)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


# iBUG 68-point indices after a horizontal flip: left and right parts swap, centre line stays.
MIRROR_ORDER = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1))
    + list(range(21, 16, -1))  # eyebrows
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46]
    + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def mirror_points(frame_points: np.ndarray, size: int) -> np.ndarray:
    flipped = frame_points[MIRROR_ORDER].copy()
    flipped[:, 0] = (size - 1) - flipped[:, 0]
    return flipped
