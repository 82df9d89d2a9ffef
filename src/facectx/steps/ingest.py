"""ingest: a folder or s3:// prefix of photos -> data/raw (photos + manifest)."""

from __future__ import annotations

import dataclasses
import os

from facectx.config import Params
from facectx.data.ingest import ingest
from facectx.progress import LOG_LINES, ProgressStyle


def ingest_step(
    params: Params,
    raw_dir: str | os.PathLike,
    source: str | None = None,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    config = dataclasses.replace(params.ingest, source=source) if source else params.ingest
    if not config.source:
        raise ValueError(
            "no photo source: set ingest.source in params, or pass a source (a folder or s3://bucket/prefix)"
        )
    return ingest(config, raw_dir, progress_style)
