"""prepare: the validated photos -> frames, masks and pyramids in shards, split by identity."""

from __future__ import annotations

import os

from facectx.config import Params
from facectx.data.prepare import prepare
from facectx.progress import LOG_LINES, ProgressStyle


def prepare_step(
    params: Params,
    raw_dir: str | os.PathLike,
    validated_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    config = params.prepare
    return prepare(raw_dir, validated_dir, out_dir, config, params.crop, params.validate, progress_style)
