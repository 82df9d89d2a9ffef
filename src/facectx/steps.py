"""The pipeline steps, one function each: the CLI (and so DVC) and the Kubeflow components call
these, so both orchestrators run the same code."""
from __future__ import annotations

import dataclasses
import os

from facectx.config import Params


def ingest_step(params: Params, raw_dir: str | os.PathLike, source: str | None = None) -> dict:
    from facectx.data.ingest import ingest

    config = dataclasses.replace(params.ingest, source=source) if source else params.ingest
    return ingest(config, raw_dir)


def validate_step(params: Params, raw_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    from facectx.data.validate import validate

    return validate(raw_dir, out_dir, params.validate, params.crop, params.landmarks)


def prepare_step(params: Params, raw_dir: str | os.PathLike, validated_dir: str | os.PathLike,
                 out_dir: str | os.PathLike) -> dict:
    from facectx.data.prepare import prepare

    return prepare(raw_dir, validated_dir, out_dir, params.prepare, params.crop, params.validate)
