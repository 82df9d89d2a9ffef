"""Typed, frozen settings: the one reader of params.yaml.

Every hyperparameter lives in params.yaml, one section per pipeline step; each section maps onto
one dataclass below. Unknown or missing keys are errors that name the key, so a typo in
params.yaml never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class IngestConfig:
    source: str  # folder laid out <identity>/<photo>, or s3://bucket/prefix
    extensions: tuple[str, ...]  # file name endings counted as photos (case-insensitive)
    download_workers: int  # parallel S3 downloads
    max_attempts: int  # boto3 retry attempts per S3 request


@dataclass(frozen=True)
class LandmarkConfig:
    backend: str  # "dlib" (offline default) or "face_alignment" (FAN)
    upsample_when_missing: bool  # dlib: search again at 2x when no face is found at 1x
    fan_weights: str | None  # FAN: local file or URL of the 2D-FAN weights; null = face-alignment's default (torch hub cache)
    device: str  # FAN: torch device


@dataclass(frozen=True)
class CropConfig:
    size_px: int  # side of the square training frame
    box_scale: float  # frame side / side of the 68-point box
    box_shift_up: float  # frame centre moved up by this fraction of the box height (keeps hair in view)


@dataclass(frozen=True)
class ValidateConfig:
    min_valid_fraction: float  # the stage fails below this share of valid photos
    min_side_px: int  # smaller photos are quarantined
    max_pixels: int  # declared width*height above this is a decompression bomb
    formats: tuple[str, ...]  # accepted container formats (PIL names)
    mask_fraction_min: float  # face-mask area / frame area, lower bound
    mask_fraction_max: float  # ... upper bound
    max_crop_outside_fraction: float  # share of the frame allowed to fall outside the photo (padded black)
    workers: int  # processes for decoding + landmarks


@dataclass(frozen=True)
class SplitConfig:
    method: str  # "auto" (LFW lists when the source has them, else hash), "lfw" or "hash"
    val_fraction: float  # share of training identities held out for validation
    test_fraction: float  # hash method only: share of identities for test
    seed: int  # salts the identity hash


@dataclass(frozen=True)
class PrepareConfig:
    resolutions: tuple[int, ...]  # pyramid levels, ascending; the last equals crop.size_px
    mirror: bool  # add a mirrored copy of every training photo (the paper's augmentation)
    workers: int  # processes for cropping, masking and the pyramid
    preview_count: int  # photos in the preview grid
    split: SplitConfig


@dataclass(frozen=True)
class Params:
    ingest: IngestConfig
    landmarks: LandmarkConfig
    crop: CropConfig
    validate: ValidateConfig
    prepare: PrepareConfig


def _build(cls, raw, where: str):
    """Build dataclass `cls` from mapping `raw`, converting lists to tuples and nested sections."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    missing = sorted(set(fields) - set(raw))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {sorted(fields)}")
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}.{name}: expected a list, got {value!r}")
            value = tuple(value)
        else:
            value = _check_scalar(value, hint, f"{where}.{name}")
        values[name] = value
    return cls(**values)


def _check_scalar(value, hint, where: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    raise ValueError(f"{where}: expected {hint}, got {value!r}")


def load_params(path: str | os.PathLike = DEFAULT_PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path.resolve()}")
    return parse_params(path.read_text(), str(path))


def parse_params(text: str, where: str = "params") -> Params:
    """Params from YAML text (how Kubeflow components receive them)."""
    params = _build(Params, yaml.safe_load(text), where)
    _check_consistency(params, Path(where))
    return params


def dump_params(params: Params) -> str:
    return yaml.safe_dump(dataclasses.asdict(params), sort_keys=False)


def _check_consistency(params: Params, path: Path) -> None:
    if params.landmarks.backend not in ("dlib", "face_alignment"):
        raise ValueError(f"{path}: landmarks.backend must be 'dlib' or 'face_alignment', got {params.landmarks.backend!r}")
    resolutions = params.prepare.resolutions
    if list(resolutions) != sorted(resolutions) or resolutions[-1] != params.crop.size_px:
        raise ValueError(f"{path}: prepare.resolutions must ascend and end at crop.size_px={params.crop.size_px}, got {list(resolutions)}")
    for low, high in zip(resolutions, resolutions[1:]):
        if high != 2 * low:
            raise ValueError(f"{path}: prepare.resolutions must double at each level, got {list(resolutions)}")
    if params.prepare.split.method not in ("auto", "lfw", "hash"):
        raise ValueError(f"{path}: prepare.split.method must be auto, lfw or hash, got {params.prepare.split.method!r}")
    if not 0 < params.validate.mask_fraction_min < params.validate.mask_fraction_max < 1:
        raise ValueError(f"{path}: need 0 < validate.mask_fraction_min < validate.mask_fraction_max < 1")
