"""Decode a photo into 8-bit RGB, or reject it with a reason a person can act on."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings

import numpy as np
from PIL import Image

# We enforce our own pixel limit (validate.max_pixels) on the declared size, before decoding; PIL's
# own guard (Image.MAX_IMAGE_PIXELS, checked when a file is opened) would otherwise raise a less
# specific error, or refuse a photo our limit allows. It is lifted only while decode_photo opens a
# file, never process-wide: importing facectx leaves PIL's limit as it was for everyone else.
_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pil_pixel_limit(limit: int | None):
    """PIL's decompression-bomb limit set to `limit` inside the block, restored after it. The lock
    keeps concurrent decodes (threads of a server) from restoring each other's value."""
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


class PhotoRejected(ValueError):
    """A photo that cannot be used; str(error) is the quarantine reason."""


_MODE_REASONS = {
    "L": "grayscale (mode L): training targets must be colour photos",
    "1": "black-and-white (mode 1): training targets must be colour photos",
    "LA": "grayscale with alpha (mode LA): training targets must be colour photos",
    "CMYK": "CMYK colour (mode CMYK): no faithful RGB conversion without its colour profile",
    "I;16": "16-bit samples (mode I;16): expected 8-bit RGB",
    "I;16B": "16-bit samples (mode I;16B): expected 8-bit RGB",
    "I;16L": "16-bit samples (mode I;16L): expected 8-bit RGB",
    "I": "32-bit integer samples (mode I): expected 8-bit RGB",
    "F": "floating-point samples (mode F): expected 8-bit RGB",
}


def decode_photo(source: str | os.PathLike | bytes, max_pixels: int, formats: tuple[str, ...]) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB array, or raise PhotoRejected naming what is wrong.
    source: a photo file, or its bytes (a photo sent to the served model)."""
    in_memory = isinstance(source, (bytes, bytearray))
    size = len(source) if in_memory else os.path.getsize(source)
    if size == 0:
        raise PhotoRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened = io.BytesIO(source) if in_memory else source
        try:
            with _pil_pixel_limit(None):  # our own check on the declared size follows at once
                image = Image.open(opened)
        except Exception as err:  # anything PIL cannot open
            # PIL names the file by its object's address or its path: a reason must not change between
            # runs nor depend on where the photo lies (bytes from S3 or a file in data/raw)
            message = str(err).replace(repr(opened if in_memory else os.fspath(opened)), "<the photo>")
            raise PhotoRejected(f"not a readable image ({type(err).__name__}: {message})") from None
        with image:
            if image.format not in formats:
                raise PhotoRejected(f"unsupported format {image.format}; accepted: {', '.join(formats)}")
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise PhotoRejected(
                    f"declared size {image.width}x{image.height} ({pixels:,} px) exceeds validate.max_pixels "
                    f"({max_pixels:,}): possible decompression bomb"
                )
            mode = image.mode
            if mode in _MODE_REASONS:
                raise PhotoRejected(_MODE_REASONS[mode])
            if mode == "P" and "transparency" in image.info:
                raise PhotoRejected("palette image with transparency: the colour under transparent pixels is undefined")
            if mode not in ("RGB", "RGBA", "P"):
                raise PhotoRejected(f"unsupported pixel mode {mode}: expected 8-bit RGB")
            if any(str(tile.args).endswith(";16B") for tile in image.tile):
                # PIL silently reduces 16-bit colour PNGs to 8 bits; say so instead.
                raise PhotoRejected(f"16-bit samples ({image.tile[0].args}): expected 8-bit RGB")
            try:
                image.load()
            except Exception as err:  # truncated or corrupt data
                raise PhotoRejected(f"truncated or corrupt image data ({type(err).__name__}: {err})") from None
            if mode == "RGBA":
                alpha = np.asarray(image.getchannel("A"))
                if alpha.min() < 255:
                    raise PhotoRejected(
                        f"has transparent pixels ({(alpha < 255).mean():.0%} of the photo): "
                        "the colour under them is undefined"
                    )
            rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb)
