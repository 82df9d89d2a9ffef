"""A pack's frames and geometry, both sides: the full-size frames as WebP files back to back, and
the frame landmarks and validity masks recomputed from the photo's landmarks and size exactly as
`prepare` computes them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from facectx.airgap.format import WEBP_QUALITY, PackError
from facectx.config import CropConfig
from facectx.data.masks import face_frame, frame_validity, points_in_frame


def encode_frames(frames: np.ndarray, quality: int = WEBP_QUALITY) -> tuple[bytes, np.ndarray]:
    """(N, s, s, 3) uint8 -> the WebP files one after another, and the N + 1 offsets into them."""
    chunks, offsets = [], [0]
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="WEBP", quality=quality, method=6)
        chunks.append(buffer.getvalue())
        offsets.append(offsets[-1] + len(chunks[-1]))
    return b"".join(chunks), np.asarray(offsets, dtype=np.int64)


def decode_frames(data: bytes, offsets: np.ndarray, where: str) -> np.ndarray:
    frames = []
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:])):
        try:
            frames.append(np.asarray(Image.open(io.BytesIO(data[start:end])).convert("RGB")))
        except Exception as err:
            raise PackError(
                f"{where}: frame {i} does not decode ({type(err).__name__}: {err}); the pack is damaged"
            ) from err
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def frame_landmarks(photo_points: np.ndarray, crop: CropConfig) -> np.ndarray:
    """(N, 68, 2) landmarks in the frame, from the photo's landmarks, computed as prepare does."""
    return np.stack([points_in_frame(p, face_frame(p, crop), crop.size_px) for p in photo_points.astype(np.float32)])


def frame_validities(photo_points: np.ndarray, photo_sizes: np.ndarray, crop: CropConfig) -> np.ndarray:
    """(N, s, s) validity masks of the frames (which pixels lie inside the photo), as prepare makes them."""
    return np.stack(
        [
            frame_validity(face_frame(p, crop), int(w), int(h), crop.size_px)
            for p, (w, h) in zip(photo_points.astype(np.float32), photo_sizes)
        ]
    )
