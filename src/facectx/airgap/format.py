"""What an air-gap pack is: its layout, its version, its budget, and the check that a pack fits
this checkout. `facectx airgap pack` writes one (facectx.airgap.pack), the far side rebuilds
prepared data from it (facectx.airgap.unpack).

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
(facectx.data.examples.example_from_frame), so only the frame's re-encoding differs from home;
its PSNR is recorded and the rebuilt data version is marked as derived.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

PACK_FORMAT = 1
MAIN_SET = "lfw"
DEFAULT_MAX_MIB = 60.0  # the pack's budget: what one trip to the GPU machine carries
WEBP_QUALITY = 90  # 39.9 dB over the whole LFW copy; JPEG needs q92 and 69 MiB for the same
# The modules that decide what a pack holds and how it is rebuilt: a pack made by other code is refused.
_FORMAT_MODULES = (
    "airgap/format.py",
    "airgap/frames.py",
    "airgap/pack.py",
    "airgap/unpack.py",
    "data/examples.py",
    "data/shards.py",
    "data/masks.py",
)


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


def safe_set_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_") or "extra"


def read_manifest(pack: str | os.PathLike) -> dict:
    """The pack's pack.json, refused (PackError) when another version of facectx made the pack."""
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
