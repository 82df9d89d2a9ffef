"""validate: the raw photos checked (great-expectations), landmarks found, bad photos quarantined."""

from __future__ import annotations

import os

from facectx.config import Params
from facectx.data.validate import validate
from facectx.progress import LOG_LINES, ProgressStyle


def validate_step(
    params: Params,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    return validate(raw_dir, out_dir, params.validate, params.crop, params.landmarks, progress_style)
