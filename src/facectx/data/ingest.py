"""ingest: copy photos from a folder or s3:// prefix into the DVC-tracked raw area, with a manifest.

Raw area layout (one DVC output, kept between runs so re-runs are incremental):
    images/<identity>/<photo>    byte-exact copies
    manifest.parquet             one row per photo: path, identity, sha256, size, width, height,
                                 format, source URI (+ S3 ETag)
    quarantine.parquet           entries the source had but ingest could not take, with a reason
    split_lists/                 LFW's identity lists when the source has them
    summary.json                 source, photos found, ingested, quarantined (what the source
                                 holds: a fresh copy and a re-run write the same file)
Re-running copies only new photos and photos whose content changed (sha256; for S3 the ETag
first, so unchanged objects are not downloaded), and drops photos gone from the source.
When the source itself fails past its retries (S3 server errors, throttling, lost connection),
ingest stops with an error naming the key, after recording what it copied in manifest.parquet:
running it again continues from there.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from facectx.config import IngestConfig
from facectx.data.quarantine import quarantine_table
from facectx.data.sources import (
    Rejected,
    SourcePhoto,
    SourceUnavailable,
    identity_of,
    open_source,
    printable_key,
    unsafe_path_reason,
)
from facectx.io_utils import atomic_path, sha256_bytes, write_json, write_parquet
from facectx.progress import LOG_LINES, Progress, ProgressStyle

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "relative_path",
    "identity",
    "sha256",
    "size_bytes",
    "width",
    "height",
    "format",
    "source_uri",
    "source_etag",
]


def probe_header(data: bytes) -> tuple[int | None, int | None, str | None]:
    """Declared width, height and format, read from the header only (no decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.width, image.height, image.format
    except Exception:
        return None, None, None


def quarantine_frame(rejected: list[Rejected], stage: str) -> pd.DataFrame:
    rows = [
        {
            "relative_path": r.relative_path,
            "stage": stage,
            "check": "source_entry",
            "reason": r.reason,
            "source_uri": r.uri,
        }
        for r in rejected
    ]
    return quarantine_table(rows)


def read_manifest(raw_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(raw_dir) / "manifest.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return pd.read_parquet(path)


def ingest(config: IngestConfig, raw_dir: str | os.PathLike, progress_style: ProgressStyle = LOG_LINES) -> dict:
    raw_dir = Path(raw_dir)
    images_dir = raw_dir / "images"
    source = open_source(config.source, config.extensions, config.max_attempts)
    photos, rejected = source.scan()
    photos, outside = _confined(images_dir, photos)
    rejected += outside
    previous = {row.relative_path: row for row in read_manifest(raw_dir).itertuples(index=False)}
    with Progress(len(photos), "ingest", "photo", progress_style) as progress:
        rows, counts, failures = _copy_photos(
            source, photos, previous, images_dir, config.download_workers, rejected, progress
        )
    if failures:
        _record_progress(raw_dir, rows, previous)
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SourceUnavailable(
            f"ingest stopped: {failures[0]}{more}. The {counts['new'] + counts['changed']} photos copied "
            f"so far are kept in {images_dir} and recorded in manifest.parquet: run ingest again "
            "to continue from there"
        ) from failures[0]

    manifest = _manifest_frame(rows)
    removed = _remove_stale_copies(images_dir, set(manifest.relative_path))
    write_parquet(raw_dir / "manifest.parquet", manifest)
    write_parquet(raw_dir / "quarantine.parquet", quarantine_frame(rejected, "ingest"))
    _write_split_lists(raw_dir / "split_lists", source.split_lists())
    summary = {
        "source": config.source,
        "photos_found": len(photos) + len(rejected),
        "ingested": len(manifest),
        "quarantined": len(rejected),
    }
    # The DVC output holds only what the source determines; this run's work (new, changed,
    # unchanged, removed) would give every clone its own data/raw hash, so it is logged and returned.
    write_json(raw_dir / "summary.json", summary)
    run_counts = {**summary, "removed": removed, **counts}
    log.info("ingest: %s", run_counts)
    return run_counts


def _copy_photos(
    source,
    photos: list[SourcePhoto],
    previous: dict,
    images_dir: Path,
    workers: int,
    rejected: list[Rejected],
    progress: Progress,
) -> tuple[list[dict], dict[str, int], list[SourceUnavailable]]:
    """Copy the photos on `workers` threads: their manifest rows, how many were new, changed and
    unchanged, and the source's failures (which stop the copying). Photos the source cannot give
    are added to `rejected`."""
    rows, counts, failures = [], {"new": 0, "changed": 0, "unchanged": 0}, []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [(photo, pool.submit(_copy_one, source, photo, previous, images_dir)) for photo in photos]
        for photo, future in futures:
            progress.advance(1)
            if future.cancelled():
                continue
            try:
                status, row = future.result()
            except SourceUnavailable as err:
                # The source is failing, not this photo: stop asking it (photos already being
                # copied finish and are kept) rather than quarantine photos a re-run can copy.
                failures.append(err)
                for _, pending in futures:
                    pending.cancel()
                continue
            except Exception as err:
                rejected.append(
                    Rejected(photo.relative_path, photo.uri, f"cannot read from source: {type(err).__name__}: {err}")
                )
                continue
            counts[status] += 1
            rows.append(row)
            if status == "changed":
                log.info("changed since last ingest: %s", photo.relative_path)
    return rows, counts, failures


def _copy_one(source, photo: SourcePhoto, previous: dict, images_dir: Path) -> tuple[str, dict]:
    """Copy one photo unless the raw area has it already: "new", "changed" or "unchanged", and its
    manifest row. An S3 ETag and size that match the last run's spare the download."""
    dest = images_dir / photo.relative_path
    prev = previous.get(photo.relative_path)
    if (
        prev is not None
        and photo.etag
        and prev.source_etag == photo.etag
        and prev.size_bytes == photo.size_bytes
        and dest.is_file()
    ):
        return "unchanged", prev._asdict()
    data = source.read(photo)
    digest = sha256_bytes(data)
    if prev is not None and prev.sha256 == digest and dest.is_file():
        status = "unchanged"
    else:
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        status = "new" if prev is None else "changed"
    width, height, fmt = probe_header(data)
    row = dict(
        relative_path=photo.relative_path,
        identity=identity_of(photo.relative_path),
        sha256=digest,
        size_bytes=len(data),
        width=width,
        height=height,
        format=fmt,
        source_uri=photo.uri,
        source_etag=photo.etag,
    )
    return status, row


def _confined(images_dir: Path, photos: list[SourcePhoto]) -> tuple[list[SourcePhoto], list[Rejected]]:
    """Photos whose copy lands inside images_dir, and the others rejected with a reason.

    Sources reject '..', absolute and other unsafe names already; this is the last check before
    writing, whatever a source lets through (a symlinked folder in the raw area included).
    """
    root = os.path.realpath(images_dir)
    kept, rejected = [], []
    for photo in photos:
        reason = unsafe_path_reason(photo.relative_path)
        if reason is None:
            target = os.path.realpath(os.path.join(root, photo.relative_path))
            if os.path.commonpath([root, target]) != root:
                reason = f"its copy would land outside the raw area: {printable_key(target)}"
        if reason:
            rejected.append(Rejected(printable_key(photo.relative_path), photo.uri, reason))
        else:
            kept.append(photo)
    return kept, rejected


def _record_progress(raw_dir: Path, rows: list[dict], previous: dict) -> None:
    """After a stopped run, a manifest of the photos copied so far plus the previous run's rows for
    the rest (their copies are untouched), so a re-run skips what is already here."""
    done = {row["relative_path"] for row in rows}
    kept = rows + [row._asdict() for path, row in previous.items() if path not in done]
    write_parquet(raw_dir / "manifest.parquet", _manifest_frame(kept))


def _manifest_frame(rows: list[dict]) -> pd.DataFrame:
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("relative_path", ignore_index=True)
    for column in ("width", "height"):
        manifest[column] = manifest[column].astype("Int64")
    return manifest


def _remove_stale_copies(images_dir: Path, keep: set[str]) -> int:
    """Delete raw copies no longer in the source (and leftovers of interrupted runs)."""
    removed = 0
    if not images_dir.is_dir():
        return 0
    for path in sorted(images_dir.rglob("*")):
        if path.is_file() and path.relative_to(images_dir).as_posix() not in keep:
            path.unlink()
            removed += 1
    for folder in sorted((p for p in images_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _write_split_lists(folder: Path, lists: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.name not in lists:
            stale.unlink()
    for name, data in lists.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
