"""Every kind of bad input ends in the quarantine table with a clear reason; nothing crashes;
photos in = prepared + quarantined."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facectx.data.ingest import ingest
from facectx.data.prepare import prepare
from facectx.data.validate import validate


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def make_bad_inputs(source: Path, face_photo: Path, outside: Path) -> dict[str, str]:
    """Write one file per kind of bad input; return {relative path: expected reason fragment}."""
    face = Image.open(face_photo).convert("RGB")
    folder = source / "Bad_Inputs"
    folder.mkdir(parents=True)
    expected = {}

    (folder / "zero_bytes.jpg").write_bytes(b"")
    expected["Bad_Inputs/zero_bytes.jpg"] = "empty file"

    data = face_photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    expected["Bad_Inputs/truncated.jpg"] = "truncated"

    (folder / "text.jpg").write_text("this is a text file, not a photo\n")
    expected["Bad_Inputs/text.jpg"] = "not a readable image"

    png = io.BytesIO()
    face.save(png, format="PNG")
    (folder / "corrupt.png").write_bytes(png.getvalue()[:60] + bytes(range(256)) * 4)  # header intact, data garbage
    expected["Bad_Inputs/corrupt.png"] = "corrupt image data"

    (folder / "copy.jpg").write_bytes(data)  # the one real duplicate: the same pixels as face_photo
    expected["Bad_Inputs/copy.jpg"] = "duplicate content of"

    rgba = face.convert("RGBA")
    alpha = np.full((face.height, face.width), 255, np.uint8)
    alpha[:40, :40] = 0
    rgba.putalpha(Image.fromarray(alpha))
    _save(rgba, folder / "alpha.png")
    expected["Bad_Inputs/alpha.png"] = "transparent pixels"

    _save(face.convert("L"), folder / "grayscale.jpg", quality=95)
    expected["Bad_Inputs/grayscale.jpg"] = "grayscale"

    _save(face.convert("CMYK"), folder / "cmyk.jpg", quality=95)
    expected["Bad_Inputs/cmyk.jpg"] = "CMYK"

    sixteen = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    _save(Image.fromarray(sixteen), folder / "sixteen_bit.png")
    expected["Bad_Inputs/sixteen_bit.png"] = "16-bit"

    import cv2

    rgb16 = (np.asarray(face, dtype=np.uint16) * 257)[:, :, ::-1].copy()
    (folder / "sixteen_bit_rgb.png").write_bytes(cv2.imencode(".png", rgb16)[1].tobytes())
    expected["Bad_Inputs/sixteen_bit_rgb.png"] = "16-bit"

    (folder / "bomb.png").write_bytes(_png_with_declared_size(60000, 60000))
    expected["Bad_Inputs/bomb.png"] = "decompression bomb"

    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 150, dtype=np.float32)[None, :, None] * np.ones((150, 1, 3), np.float32)
    noface = np.clip(gradient + rng.normal(0, 8, gradient.shape), 0, 255).astype(np.uint8)
    _save(Image.fromarray(noface), folder / "no_face.jpg", quality=95)
    expected["Bad_Inputs/no_face.jpg"] = "no face found"

    _save(face.resize((40, 40), Image.LANCZOS), folder / "tiny.jpg", quality=95)
    expected["Bad_Inputs/tiny.jpg"] = "too small"

    bad_name = os.path.join(os.fsencode(folder), b"name_\xff\xfe.jpg")
    with open(bad_name, "wb") as handle:
        handle.write(data)
    expected["Bad_Inputs/name_\\xff\\xfe.jpg"] = "not valid UTF-8"

    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(data)
    os.symlink(outside, folder / "link_outside.jpg")
    expected["Bad_Inputs/link_outside.jpg"] = "symlink points outside the source"
    return expected


def test_every_bad_input_is_quarantined_with_its_reason(sample_source, tmp_path, quick_params):
    good = sorted(p.relative_to(sample_source).as_posix() for p in sample_source.rglob("*.jpg"))
    expected = make_bad_inputs(sample_source, sample_source / good[0], tmp_path / "elsewhere" / "photo.jpg")
    raw, validated, prepared = tmp_path / "raw", tmp_path / "validated", tmp_path / "prepared"
    config = dataclasses.replace(quick_params.ingest, source=str(sample_source))

    summary = ingest(config, raw)
    metrics = validate(
        raw,
        validated,
        dataclasses.replace(quick_params.validate, min_valid_fraction=0.3),
        quick_params.crop,
        quick_params.landmarks,
    )
    result = prepare(raw, validated, prepared, quick_params.prepare, quick_params.crop, quick_params.validate)

    quarantine = pd.read_parquet(prepared / "quarantine.parquet")
    reasons = dict(zip(quarantine.relative_path, quarantine.reason))
    assert set(reasons) == set(expected), f"unexpected quarantine: {reasons}"
    for path, fragment in expected.items():
        assert fragment in reasons[path], f"{path}: {reasons[path]!r} lacks {fragment!r}"
        # A file that does not decode is not a duplicate of another that does not either.
        assert ("duplicate content" in reasons[path]) == (path == "Bad_Inputs/copy.jpg"), reasons[path]
    checks = dict(zip(quarantine.relative_path, quarantine.check))
    assert checks["Bad_Inputs/no_face.jpg"] == "face_found" and checks["Bad_Inputs/tiny.jpg"] == "min_size"
    assert (
        checks["Bad_Inputs/cmyk.jpg"] == "decodes_to_8bit_rgb"
        and checks["Bad_Inputs/link_outside.jpg"] == "source_entry"
    )
    assert summary["photos_found"] == len(good) + len(expected)
    assert metrics["valid"] == len(good)
    assert result["prepared"] == len(good)
    assert result["prepared"] + result["quarantined"] == summary["photos_found"]
    prepared_paths = set()
    for split in ("train", "val", "test"):
        index = pd.read_parquet(prepared / split / "index.parquet")
        prepared_paths |= set(index.relative_path)
    assert prepared_paths == set(good)
    report = (validated / "report" / "summary.md").read_text()
    assert "decompression bomb" in report and "no face found" in report


def test_validation_fails_below_the_valid_fraction(sample_source, tmp_path, quick_params):
    good = sorted(sample_source.rglob("*.jpg"))
    for photo in good[: len(good) // 2 + 1]:
        photo.write_bytes(b"")  # more than half the photos become empty files
    raw, validated = tmp_path / "raw", tmp_path / "validated"
    ingest(dataclasses.replace(quick_params.ingest, source=str(sample_source)), raw)
    from facectx.data.validate import ValidationFailed

    with pytest.raises(ValidationFailed, match="below validate.min_valid_fraction"):
        validate(raw, validated, quick_params.validate, quick_params.crop, quick_params.landmarks)
    # The report is still written, so the person can see why.
    assert "empty file" in (validated / "report" / "summary.md").read_text()
