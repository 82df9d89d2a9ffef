"""The model `hallucinate-dataset` runs: a registry version (by alias or number) or a checkpoint folder.

A registry model is the pyfunc `facectx register` logs; its checkpoint travels as the `checkpoint`
artifact, downloaded here once per version into a cache folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from facectx import tracking
from facectx.checkpoint import META, WEIGHTS, read_meta

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelNotFound(FileNotFoundError):
    """--model names no model: no checkpoint folder there, or no such registry version."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load, with what the manifest records about it."""

    checkpoint_dir: Path
    spec: str  # what the user gave (--model)
    registry_name: str  # "" for a checkpoint folder
    registry_version: str  # "" for a checkpoint folder
    run_id: str  # the MLflow run that registered it ("" for a checkpoint folder)
    data_version: str  # the prepared data it was trained on (checkpoint meta `data_version`)
    weights_sha256: str  # names the weights: OUT refuses shards of other weights
    stage: int  # the resolution of its last block (its output frames)


def resolve_model(spec: str, cache_dir: str | os.PathLike, tracking_uri: str | None = None) -> ResolvedModel:
    match = _REGISTRY_URI.match(spec)
    if spec.startswith("models:/") and not match:
        raise ValueError(f"--model {spec!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a checkpoint folder")
    if not match:
        return _from_folder(Path(spec), spec, "", "", "")
    name, alias, number = match["name"], match["alias"], match["version"]
    version = tracking.ModelRegistry(tracking_uri).version(name, alias=alias, number=number)
    if version is None:
        raise ModelNotFound(
            f"--model {spec}: the registry at {tracking.redacted(tracking.tracking_uri(tracking_uri))} has no "
            f"{'alias ' + alias if alias else 'version ' + number} of model {name!r}; register one "
            "(`facectx register`, `facectx promote`) or give a checkpoint folder"
        )
    target = Path(cache_dir) / f"{name}-v{version.version}"
    if not (target / "checkpoint" / META).is_file():
        tracking.download_model_artifact(f"models:/{name}/{version.version}", "checkpoint", target, tracking_uri)
    return _from_folder(target / "checkpoint", spec, name, str(version.version), version.run_id or "")


def _from_folder(folder: Path, spec: str, name: str, version: str, run_id: str) -> ResolvedModel:
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise ModelNotFound(
            f"--model {spec}: {folder} is not a checkpoint folder ({META} and {WEIGHTS} expected); give "
            "models/stage_128/checkpoint after training, or a registry URI like models:/facectx-cascade@champion"
        )
    meta = read_meta(folder)
    return ResolvedModel(
        checkpoint_dir=folder,
        spec=spec,
        registry_name=name,
        registry_version=version,
        run_id=run_id,
        data_version=str(meta.get("data_version") or ""),
        weights_sha256=meta.get("files", {}).get(WEIGHTS, ""),
        stage=int(meta["stage"]),
    )
