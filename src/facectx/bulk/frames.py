"""Frames as image files (PNG, or WebP lossless or at a quality) and the sample grid.

Encoders are deterministic: the same frame gives the same bytes, which is what lets a resumed run
match an uninterrupted one byte for byte."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

EXTENSIONS = {"png": "png", "webp": "webp"}
# libwebp's effort (0-6) for lossless frames: the pixels are the same at every effort, the time and
# the size are not. 128 px frames of the quick-trained cascade on LFW, 2026-12-07 on this CPU, one
# thread: effort 4 (PIL's default) 31 ms a frame; effort 1 4.4 ms, 27.9 kB; effort 0 0.68 ms, 30.3 kB
# (+9%). At effort 1 encoding took a fifth of the 2-core machine's CPU in a run; effort 0 is the
# cheapest lossless encoding there is (PNG: 1.8 ms at zlib level 1, 31.9 kB). Part of OUT's stamp
# (run.py): an OUT is never a mix of encodings.
WEBP_LOSSLESS_METHOD = 0


def encode_frame(frame: np.ndarray, image_format: str, webp_quality: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(frame)
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=6)
    elif image_format == "webp":
        lossless = webp_quality >= 100
        method = WEBP_LOSSLESS_METHOD if lossless else 4
        image.save(buffer, format="WEBP", lossless=lossless, quality=100 if lossless else webp_quality, method=method)
    else:
        raise ValueError(f"hallucinate.image_format {image_format!r}: use png or webp")
    return buffer.getvalue()


def sample_grid(masked: list[np.ndarray], outputs: list[np.ndarray], per_row: int = 4) -> np.ndarray:
    """masked | hallucinated pairs, `per_row` pairs a row (black where a row runs short)."""
    pairs = [np.concatenate([m, o], axis=1) for m, o in zip(masked, outputs)]
    blank = np.zeros_like(pairs[0])
    while len(pairs) % per_row:
        pairs.append(blank)
    rows = [np.concatenate(pairs[i : i + per_row], axis=1) for i in range(0, len(pairs), per_row)]
    return np.concatenate(rows, axis=0)
