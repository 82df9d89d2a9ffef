"""hallucinate: one photo -> the trained model's frame with its context hallucinated."""

from __future__ import annotations

import os
from pathlib import Path

from facectx.config import Params, parse_weights_choices
from facectx.data.photos import PhotoRejected, decode_photo
from facectx.inference import NoFaceFound, PhotoHallucinator
from facectx.io_utils import write_png


def hallucinate_step(
    params: Params,
    photo: str | os.PathLike,
    out: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    weights: str | None = None,
) -> dict:
    """One photo -> a PNG of the hallucinated frame; errors name the photo. weights: which of the
    checkpoint's weights (auto, running, standing, ema; default: evaluate.weights' first)."""
    photo = Path(photo)
    if not photo.is_file():
        raise FileNotFoundError(f"{photo}: no such photo")
    try:
        rgb = decode_photo(photo, params.validate.max_pixels, params.validate.formats)
    except PhotoRejected as err:
        raise ValueError(f"{photo}: not a usable photo: {err}") from None
    weights = parse_weights_choices([weights], "--weights")[0] if weights else params.evaluate.weights[0]
    hallucinator = PhotoHallucinator(checkpoint_dir, params.crop, params.landmarks, weights=weights)
    try:
        result = hallucinator(rgb)
    except NoFaceFound as err:
        raise ValueError(f"{photo}: {err}") from None
    write_png(out, result["output"])
    size = list(result["output"].shape)
    return {"photo": str(photo), "out": str(out), "size": size, "weights": hallucinator.model.weights}
