"""`facectx airgap pack`: what a run on an air-gapped GPU machine needs, in one small folder.

    pack.json           format, code fingerprint, contents, sizes, re-encoding PSNR, data versions
    params.yaml         the params file, as it is here
    calibration.json    the matcher's LFW-pair calibration (needs the photos and dlib: made here)
    weights/face-api/   the identity network (L_id)
    weights/faceres/    the evaluation matcher
    sets/<set>/<split>/ frames.bin + frames.offsets.npy (each full-size frame as WebP),
                        photo_points.npz (the 68 landmarks in the photo, its size), index.parquet

Only the full-size frame, the photo's landmarks and its size travel. The far side rebuilds the
mask, the masked face, the validity mask (which frame pixels lie inside the photo), the lower
pyramid levels and the mirrored training copies exactly as `prepare` builds them
(facectx.data.prepare.example_from_frame), so only the frame's re-encoding differs from home;
its PSNR is recorded and the rebuilt data version is marked as derived.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facectx.config import CropConfig, Params, load_params
from facectx.data.masks import downsample, face_frame, frame_validity, points_in_frame
from facectx.data.splits import SPLITS
from facectx.io_utils import write_json, write_parquet

log = logging.getLogger(__name__)

PACK_FORMAT = 1
MAIN_SET = "lfw"
DEFAULT_MAX_MIB = 60.0
WEBP_QUALITY = 90  # 39.9 dB over the whole LFW copy; JPEG needs q92 and 69 MiB for the same
# The modules that decide what a pack holds and how it is rebuilt: a pack made by other code is refused.
_FORMAT_MODULES = ("airgap/pack.py", "data/prepare.py", "data/masks.py")


class PackError(ValueError):
    """A pack is over budget, incomplete, or from another version of facectx."""


def code_fingerprint() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _FORMAT_MODULES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- encoding


def encode_frames(frames: np.ndarray, quality: int = WEBP_QUALITY) -> tuple[bytes, np.ndarray]:
    """(N, s, s, 3) uint8 -> the WebP files one after another, and the N + 1 offsets into them."""
    chunks, offsets = [], [0]
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="WEBP", quality=quality, method=6)
        chunks.append(buffer.getvalue())
        offsets.append(offsets[-1] + len(chunks[-1]))
    return b"".join(chunks), np.asarray(offsets, dtype=np.int64)


def decode_frames(data: bytes, offsets: np.ndarray, where: str) -> np.ndarray:
    frames = []
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:])):
        try:
            frames.append(np.asarray(Image.open(io.BytesIO(data[start:end])).convert("RGB")))
        except Exception as err:
            raise PackError(
                f"{where}: frame {i} does not decode ({type(err).__name__}: {err}); the pack is damaged"
            ) from err
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


# --------------------------------------------------------------------------- home side


def frame_landmarks(photo_points: np.ndarray, crop: CropConfig) -> np.ndarray:
    """(N, 68, 2) landmarks in the frame, from the photo's landmarks, computed as prepare does."""
    return np.stack([points_in_frame(p, face_frame(p, crop), crop.size_px) for p in photo_points.astype(np.float32)])


def frame_validities(photo_points: np.ndarray, photo_sizes: np.ndarray, crop: CropConfig) -> np.ndarray:
    """(N, s, s) validity masks of the frames (which pixels lie inside the photo), as prepare makes them."""
    return np.stack(
        [
            frame_validity(face_frame(p, crop), int(w), int(h), crop.size_px)
            for p, (w, h) in zip(photo_points.astype(np.float32), photo_sizes)
        ]
    )


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
    folder = prepared_dir / split
    meta = json.loads((prepared_dir / "meta.json").read_text())
    size = max(meta["resolutions"])
    index = pd.read_parquet(folder / "index.parquet")
    keep = ~index.mirrored.to_numpy(bool)
    frames = np.asarray(np.load(folder / f"target_{size}.npy", mmap_mode="r")[keep])
    landmarks = np.asarray(np.load(folder / "landmarks.npy", mmap_mode="r")[keep])
    points, sizes = _photo_geometry(validated_dir, index.relative_path[keep], landmarks, crop, str(folder))
    valid = np.asarray(np.load(folder / f"valid_{size}.npy", mmap_mode="r")[keep])
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
    low = min(meta["resolutions"])
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
    import dataclasses

    from facectx import steps

    split = dataclasses.replace(params.prepare.split, method="hash", val_fraction=0.0, test_fraction=1.0)
    as_test = dataclasses.replace(params, prepare=dataclasses.replace(params.prepare, split=split, mirror=False))
    steps.ingest_step(as_test, work / "raw", str(source))
    steps.validate_step(as_test, work / "raw", work / "validated")
    steps.prepare_step(as_test, work / "raw", work / "validated", work / "prepared")
    return work / "prepared", work / "validated"


def _copy_weights(params: Params, out: Path) -> dict[str, str]:
    from facectx.assets import weights_folder

    identity = weights_folder("face-api", params.assets.identity_weights)
    matcher = weights_folder("faceres", params.assets.matcher_weights)
    for name, source in (("face-api", identity), ("faceres", matcher)):
        shutil.copytree(source, out / "weights" / name, ignore=shutil.ignore_patterns(".*"))
    return {"identity": "weights/face-api", "matcher": "weights/faceres"}


def safe_set_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_") or "extra"


def build_pack(
    params_file: str | os.PathLike,
    out: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    validated_dir: str | os.PathLike,
    raw_dir: str | os.PathLike,
    test_sources: list[str] = (),
    without: tuple[str, ...] = (),
    max_mib: float = DEFAULT_MAX_MIB,
) -> dict:
    """Build the pack in a temporary folder beside `out`; it replaces `out` only when complete and
    within `max_mib`."""
    from facectx import steps
    from facectx.evaluation.networks import make_networks
    from facectx.training.data import data_version

    params = load_params(params_file)
    out, prepared_dir = Path(out), Path(prepared_dir)
    unknown = sorted(set(without) - set(SPLITS))
    if unknown:
        raise PackError(f"--without {unknown}: splits are {list(SPLITS)}")
    if not (prepared_dir / "meta.json").is_file():
        raise PackError(f"no prepared data in {prepared_dir}: run `dvc repro prepare` (or `facectx prepare`) first")
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copy(params_file, staging / "params.yaml")
        sets = {
            MAIN_SET: {
                split: _pack_split(
                    prepared_dir, Path(validated_dir), split, params.crop, staging / "sets" / MAIN_SET / split
                )
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
        weights = _copy_weights(params, staging)
        nets = make_networks(params.evaluate.matcher, "cpu", params.assets)
        calibration = steps.matcher_calibration(params, raw_dir, nets)
        if calibration is not None:
            write_json(staging / "calibration.json", calibration)
        prepared_meta = json.loads((prepared_dir / "meta.json").read_text())
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
        }
        write_json(staging / "pack.json", manifest)
        size = folder_bytes(staging)
        if size > max_mib * 2**20:
            parts = {p.name: round(folder_bytes(p) / 2**20, 1) for p in staging.iterdir() if p.is_dir()}
            raise PackError(
                f"the pack would be {size / 2**20:.1f} MiB, over the {max_mib:g} MiB budget (MiB by part: {parts}); "
                f"leave a split out (--without train|val|test) or pack fewer test sources"
            )
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest["bytes"] = size
    log.info("airgap pack: %s (%.1f MiB) in %.0f s", out, size / 2**20, time.perf_counter() - started)
    return manifest


# --------------------------------------------------------------------------- far side


def read_manifest(pack: str | os.PathLike) -> dict:
    path = Path(pack) / "pack.json"
    if not path.is_file():
        raise PackError(f"{pack} is not a facectx pack (no pack.json); build one with `facectx airgap pack`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != PACK_FORMAT or manifest.get("code") != code_fingerprint():
        raise PackError(
            f"{path} was made by another version of facectx (format {manifest.get('format')}, code "
            f"{manifest.get('code')}; this checkout: format {PACK_FORMAT}, code {code_fingerprint()}): "
            f"pack again from this checkout"
        )
    return manifest


def unpack_set(pack: str | os.PathLike, name: str, out: str | os.PathLike, share_from: Path | None = None) -> Path:
    """Rebuild prepared data (the shards `prepare` writes) for one packed set into `out`.

    Splits the set lacks are linked from `share_from` (an extra test set borrows the main set's
    validation and training splits: the real-vs-real floor and the mean-context baseline)."""
    from facectx.data.prepare import SplitWriter, example_from_frame

    pack, out = Path(pack), Path(out)
    manifest = read_manifest(pack)
    crop = CropConfig(**manifest["crop"])
    if name not in manifest["sets"]:
        raise PackError(f"{pack}: no test set {name!r} (sets: {sorted(manifest['sets'])})")
    resolutions = tuple(manifest["resolutions"])
    rows = {}
    for split in SPLITS:
        packed = pack / "sets" / name / split
        if not packed.is_dir():
            if share_from is not None and (share_from / split).is_dir():
                (out / split).parent.mkdir(parents=True, exist_ok=True)
                (out / split).symlink_to((share_from / split).resolve(), target_is_directory=True)
                rows[split] = json.loads((share_from / "meta.json").read_text())["rows"][split]
            continue
        frames = decode_frames(
            (packed / "frames.bin").read_bytes(), np.load(packed / "frames.offsets.npy"), str(packed)
        )
        with np.load(packed / "photo_points.npz") as stored:
            landmarks = frame_landmarks(stored["points"], crop)
            valid = frame_validities(stored["points"], stored["sizes"], crop)
        index = pd.read_parquet(packed / "index.parquet")
        if not len(frames) == len(landmarks) == len(index):
            raise PackError(f"{packed}: {len(frames)} frames, {len(landmarks)} landmark rows, {len(index)} index rows")
        mirror = manifest["mirror"] and split == "train"
        writer = SplitWriter(out / split, resolutions, max(len(frames) * (2 if mirror else 1), 1))
        for frame, points, inside, row in zip(frames, landmarks, valid, index.itertuples()):
            example = example_from_frame(frame, points, resolutions, inside)
            writer.add(example, row.relative_path, row.identity, mirrored=False)
            if mirror:
                writer.add(example.mirrored(), row.relative_path, row.identity, mirrored=True)
        rows[split] = writer.close()
    write_json(
        out / "meta.json",
        {
            "resolutions": list(resolutions),
            "crop": manifest["crop"],
            "mirror": manifest["mirror"],
            "rows": rows,
            "arrays": ["target", "masked", "mask", "valid", "landmarks"],
            # Derived data: training on it is not training on the home data version.
            "derived": {
                "from_pack": manifest["id"],
                "from_data_version": manifest["data_version"],
                "set": name,
                "encoding": manifest["encoding"],
                "psnr_db": {s: v.get("psnr_db") for s, v in manifest["sets"][name].items() if isinstance(v, dict)},
            },
        },
    )
    return out
