"""`facectx airgap pack`: what a run on an air-gapped GPU machine needs, in one small folder (the
layout: facectx.airgap.format). Built at home from the prepared and validated data; the pack
replaces its folder only when complete and within its budget."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from facectx.airgap.format import (
    DEFAULT_MAX_MIB,
    MAIN_SET,
    PACK_FORMAT,
    WEBP_QUALITY,
    PackError,
    code_fingerprint,
    folder_bytes,
    safe_set_name,
)
from facectx.airgap.frames import decode_frames, encode_frames, frame_landmarks, frame_validities, psnr
from facectx.airgap.reference import pack_params, reference_rows
from facectx.assets import weights_folder
from facectx.config import CropConfig, Params
from facectx.data.masks import downsample
from facectx.data.shards import SplitShards, data_version, has_meta, read_meta
from facectx.data.splits import SPLITS
from facectx.evaluation.networks import make_networks
from facectx.io_utils import write_json, write_parquet
from facectx.steps.evaluate import matcher_calibration
from facectx.steps.ingest import ingest_step
from facectx.steps.prepare import prepare_step
from facectx.steps.validate import validate_step

log = logging.getLogger(__name__)


def build_pack(
    params_file: str | os.PathLike,
    out: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    validated_dir: str | os.PathLike,
    raw_dir: str | os.PathLike,
    test_sources: list[str] = (),
    without: tuple[str, ...] = (),
    max_mib: float = DEFAULT_MAX_MIB,
    profile: str | None = None,
) -> dict:
    """Build the pack in a temporary folder beside `out`; it replaces `out` only when complete and
    within `max_mib`. profile: the params profile the far run will use (default: the params'):
    the matcher's calibration and the rows scored here (the baselines', real vs real) follow it."""
    params, profile = pack_params(params_file, profile)
    out, prepared_dir = Path(out), Path(prepared_dir)
    unknown = sorted(set(without) - set(SPLITS))
    if unknown:
        raise PackError(f"--without {unknown}: splits are {list(SPLITS)}")
    if not has_meta(prepared_dir):
        raise PackError(f"no prepared data in {prepared_dir}: run `dvc repro prepare` (or `facectx prepare`) first")
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copy(params_file, staging / "params.yaml")
        sets = _pack_sets(params, prepared_dir, Path(validated_dir), test_sources, without, staging)
        manifest = _write_manifest(params, prepared_dir, raw_dir, sets, without, staging, profile)
        size = _within_budget(staging, max_mib)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest["bytes"] = size
    log.info("airgap pack: %s (%.1f MiB) in %.0f s", out, size / 2**20, time.perf_counter() - started)
    return manifest


def _pack_sets(
    params: Params, prepared_dir: Path, validated_dir: Path, test_sources, without, staging: Path
) -> dict[str, dict]:
    """The main set's splits (less `without`), then each test source as its own test set."""
    sets = {
        MAIN_SET: {
            split: _pack_split(prepared_dir, validated_dir, split, params.crop, staging / "sets" / MAIN_SET / split)
            for split in SPLITS
            if split not in without
        }
    }
    for source in test_sources:
        name = safe_set_name(Path(source).name)
        if name in sets:
            raise PackError(f"--test-source {source}: a test set named {name!r} is already in the pack")
        with tempfile.TemporaryDirectory(prefix="facectx-test-source-") as work:
            extra, extra_validated = _prepare_test_source(params, Path(source), Path(work))
            sets[name] = {
                "test": _pack_split(extra, extra_validated, "test", params.crop, staging / "sets" / name / "test")
            }
            sets[name]["quarantined"] = int(json.loads((extra / "metrics.json").read_text())["quarantined"])
    return sets


def _write_manifest(
    params: Params, prepared_dir: Path, raw_dir, sets: dict, without, staging: Path, profile: str | None
) -> dict:
    """The weights, the matcher's calibration, the rows scored here and pack.json, into the staging folder."""
    weights = _copy_weights(params, staging)
    nets = make_networks(params.evaluate.matcher, "cpu", params.assets)
    calibration = matcher_calibration(params, raw_dir, nets)
    if calibration is not None:
        write_json(staging / "calibration.json", calibration)
    prepared_meta = read_meta(prepared_dir)
    manifest = {
        "format": PACK_FORMAT,
        "code": code_fingerprint(),
        "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_version": data_version(prepared_dir),
        "resolutions": prepared_meta["resolutions"],
        "crop": prepared_meta["crop"],
        "mirror": prepared_meta["mirror"],
        "encoding": f"WebP q{WEBP_QUALITY}",
        "sets": sets,
        "left_out": sorted(without),
        "weights": weights,
        "calibration": "calibration.json" if calibration else None,
        "matcher": nets.name,
        # The profile the calibration and the reference rows were made under; a far run with
        # another one scores the baselines itself.
        "profile": profile,
        "reference": {},
    }
    write_json(staging / "pack.json", manifest)
    if "test" not in without:  # scored on the frames as the far side rebuilds them from the pack
        manifest["reference"] = reference_rows(params, staging, list(sets), calibration, nets)
        write_json(staging / "pack.json", manifest)
    return manifest


def _within_budget(staging: Path, max_mib: float) -> int:
    """The staged pack's size in bytes; PackError when it is over `max_mib`."""
    size = folder_bytes(staging)
    if size > max_mib * 2**20:
        parts = {p.name: round(folder_bytes(p) / 2**20, 1) for p in staging.iterdir() if p.is_dir()}
        raise PackError(
            f"the pack would be {size / 2**20:.1f} MiB, over the {max_mib:g} MiB budget (MiB by part: {parts}); "
            f"leave a split out (--without train|val|test) or pack fewer test sources"
        )
    return size


def _photo_geometry(
    validated_dir: Path, relative_paths, frame_points: np.ndarray, crop: CropConfig, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The photo-space landmarks of these rows, smallest exact dtype (dlib's are whole pixels: int16
    compresses the whole LFW copy's to ~1.3 MB where frame coordinates take 6.6 MB), checked to
    give back exactly the prepared frame landmarks; and each photo's (width, height)."""
    records = pd.read_parquet(validated_dir / "records.parquet", columns=["relative_path", "points", "width", "height"])
    by_path = records.set_index("relative_path")
    rows = by_path.loc[list(relative_paths)]
    points = np.stack([np.asarray(p, np.float32).reshape(68, 2) for p in rows.points])
    if not np.array_equal(frame_landmarks(points, crop), frame_points):
        raise PackError(
            f"{where}: the validated landmarks in {validated_dir} do not give the prepared frame landmarks: "
            f"prepare and validate are from different runs; run `dvc repro prepare`"
        )
    whole = np.array_equal(points, np.round(points)) and np.abs(points).max(initial=0) < 2**15
    sizes = rows[["width", "height"]].to_numpy(np.int32)
    return (points.astype(np.int16) if whole else points), sizes


def _pack_split(prepared_dir: Path, validated_dir: Path, split: str, crop: CropConfig, out: Path) -> dict:
    """The unmirrored rows of one prepared split: frames as WebP, photo landmarks, index."""
    shards = SplitShards(prepared_dir, split)
    folder, size = shards.folder, shards.frame_size
    index = shards.index()
    keep = ~index.mirrored.to_numpy(bool)
    frames = np.asarray(shards.array("target", size)[keep])
    landmarks = np.asarray(shards.array("landmarks")[keep])
    points, sizes = _photo_geometry(validated_dir, index.relative_path[keep], landmarks, crop, str(folder))
    valid = np.asarray(shards.array("valid", size)[keep])
    if not np.array_equal(frame_validities(points, sizes, crop), valid):
        raise PackError(
            f"{folder}: the photo sizes in {validated_dir} do not give the prepared validity masks: "
            f"prepare and validate are from different runs; run `dvc repro prepare`"
        )
    data, offsets = encode_frames(frames)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frames.bin").write_bytes(data)
    np.save(out / "frames.offsets.npy", offsets)
    np.savez_compressed(out / "photo_points.npz", points=points, sizes=sizes)
    write_parquet(out / "index.parquet", index[keep].drop(columns=["row", "mirrored"]).reset_index(drop=True))
    decoded = decode_frames(data, offsets, str(out))
    low = min(shards.resolutions)
    smallest = lambda images: np.stack([downsample(im, low) for im in images])  # noqa: E731
    return {
        "rows": int(keep.sum()),
        "bytes": len(data),
        "psnr_db": round(psnr(frames, decoded), 2),
        f"psnr_db_{low}px": round(psnr(smallest(frames), smallest(decoded)), 2),
    }


def _prepare_test_source(params: Params, source: Path, work: Path) -> tuple[Path, Path]:
    """Any folder of photos (<identity>/<photo>) through the same ingest, validate and prepare as
    the pipeline's data, every identity in the test split."""
    split = dataclasses.replace(params.prepare.split, method="hash", val_fraction=0.0, test_fraction=1.0)
    as_test = dataclasses.replace(params, prepare=dataclasses.replace(params.prepare, split=split, mirror=False))
    ingest_step(as_test, work / "raw", str(source))
    validate_step(as_test, work / "raw", work / "validated")
    prepare_step(as_test, work / "raw", work / "validated", work / "prepared")
    return work / "prepared", work / "validated"


def _copy_weights(params: Params, out: Path) -> dict[str, str]:
    identity = weights_folder("face-api", params.assets.identity_weights)
    matcher = weights_folder("faceres", params.assets.matcher_weights)
    for name, source in (("face-api", identity), ("faceres", matcher)):
        shutil.copytree(source, out / "weights" / name, ignore=shutil.ignore_patterns(".*"))
    return {"identity": "weights/face-api", "matcher": "weights/faceres"}
