"""ingest from a folder and from a real S3 server: manifest, checksums, incremental re-runs."""

from __future__ import annotations

import dataclasses
import hashlib

import boto3
import pandas as pd

from facectx.data.ingest import MANIFEST_COLUMNS, ingest


def _config(params, source, **changes):
    return dataclasses.replace(params.ingest, source=str(source), **changes)


def test_folder_ingest_writes_a_checksummed_manifest(sample_source, tmp_path, params):
    raw = tmp_path / "raw"
    summary = ingest(_config(params, sample_source), raw)
    manifest = pd.read_parquet(raw / "manifest.parquet")
    photos = sorted(p.relative_to(sample_source).as_posix() for p in sample_source.rglob("*.jpg"))
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest.relative_path) == photos
    assert summary["new"] == len(photos) and summary["photos_found"] == len(photos)
    for row in manifest.itertuples():
        copy = raw / "images" / row.relative_path
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == row.sha256
        assert copy.read_bytes() == (sample_source / row.relative_path).read_bytes()
        assert row.identity == row.relative_path.split("/")[0]
        assert (row.width, row.height, row.format) == (150, 150, "JPEG")
    # LFW's split lists sit beside the images folder: ingest keeps them with the raw data.
    assert sorted(p.name for p in (raw / "split_lists").iterdir()) == ["peopleDevTest.txt", "peopleDevTrain.txt"]


def test_rerun_copies_only_new_and_changed_photos(sample_source, tmp_path, params):
    raw = tmp_path / "raw"
    ingest(_config(params, sample_source), raw)
    photos = sorted(sample_source.rglob("*.jpg"))
    untouched = raw / "images" / photos[2].relative_to(sample_source)
    mtime = untouched.stat().st_mtime_ns

    again = ingest(_config(params, sample_source), raw)
    assert (again["new"], again["changed"], again["removed"]) == (0, 0, 0)
    assert again["unchanged"] == len(photos)
    # The same source gives the same raw area whatever came before: a fresh clone's ingest
    # reproduces the data/raw hash in dvc.lock (the per-run counts are returned and logged only).
    fresh = tmp_path / "fresh"
    ingest(_config(params, sample_source), fresh)
    for name in ("manifest.parquet", "quarantine.parquet", "summary.json"):
        assert (fresh / name).read_bytes() == (raw / name).read_bytes(), f"{name} depends on the raw area's history"

    photos[0].write_bytes(photos[1].read_bytes())  # content changed under the same name
    photos[3].unlink()  # gone from the source
    added = photos[4].parent / "added_0001.jpg"
    added.write_bytes(photos[5].read_bytes())
    third = ingest(_config(params, sample_source), raw)
    assert (third["new"], third["changed"], third["removed"]) == (1, 1, 1)
    manifest = pd.read_parquet(raw / "manifest.parquet").set_index("relative_path")
    changed = photos[0].relative_to(sample_source).as_posix()
    assert manifest.loc[changed, "sha256"] == hashlib.sha256(photos[1].read_bytes()).hexdigest()
    assert photos[3].relative_to(sample_source).as_posix() not in manifest.index
    assert not (raw / "images" / photos[3].relative_to(sample_source)).exists()
    assert untouched.stat().st_mtime_ns == mtime  # unchanged photos are not rewritten


def _upload(client, bucket, prefix, source):
    client.create_bucket(Bucket=bucket)
    for photo in sorted(source.rglob("*.jpg")):
        client.upload_file(str(photo), bucket, f"{prefix}/images/{photo.relative_to(source).as_posix()}")
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        client.upload_file(str(source.parent / name), bucket, f"{prefix}/{name}")


def test_s3_ingest_matches_folder_ingest_and_skips_unchanged_objects(s3_env, sample_source, tmp_path, params):
    client = boto3.client("s3")
    _upload(client, "facectx-photos", "lfw-sample", sample_source)
    local, remote = tmp_path / "local", tmp_path / "remote"
    ingest(_config(params, sample_source), local)
    summary = ingest(_config(params, "s3://facectx-photos/lfw-sample/images"), remote)

    columns = ["relative_path", "identity", "sha256", "size_bytes", "width", "height", "format"]
    local_manifest = pd.read_parquet(local / "manifest.parquet")[columns]
    remote_manifest = pd.read_parquet(remote / "manifest.parquet")
    pd.testing.assert_frame_equal(local_manifest, remote_manifest[columns])
    assert remote_manifest.source_uri.str.startswith("s3://facectx-photos/lfw-sample/images/").all()
    assert remote_manifest.source_etag.notna().all()
    assert (remote / "split_lists" / "peopleDevTrain.txt").is_file()
    assert summary["new"] == len(local_manifest)

    # A re-run compares ETags and downloads nothing; a changed object is noticed.
    first = remote_manifest.relative_path.iloc[0]
    client.put_object(
        Bucket="facectx-photos",
        Key=f"lfw-sample/images/{first}",
        Body=(sample_source / remote_manifest.relative_path.iloc[1]).read_bytes(),
    )
    downloads = []
    original_read = __import__("facectx.data.sources", fromlist=["S3Source"]).S3Source.read

    def counting_read(self, photo):
        downloads.append(photo.relative_path)
        return original_read(self, photo)

    import facectx.data.sources as sources

    sources.S3Source.read = counting_read
    try:
        again = ingest(_config(params, "s3://facectx-photos/lfw-sample/images"), remote)
    finally:
        sources.S3Source.read = original_read
    assert downloads == [first]
    assert (again["changed"], again["unchanged"]) == (1, len(local_manifest) - 1)


def test_missing_source_is_a_clear_error(tmp_path, params):
    import pytest

    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        ingest(_config(params, tmp_path / "no_such_folder"), tmp_path / "raw")


def test_a_symlinked_folder_in_the_raw_area_does_not_lead_copies_outside(sample_source, tmp_path, params):
    """Sources reject '..' and absolute names (see test_s3_faults); ingest also resolves where each
    copy would land, so a symlink planted in the raw area cannot carry photos elsewhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ingest's")
    person = sorted(p.name for p in sample_source.iterdir())[0]
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "images" / person).symlink_to(outside, target_is_directory=True)

    summary = ingest(_config(params, sample_source), tmp_path / "raw")
    quarantine = pd.read_parquet(tmp_path / "raw" / "quarantine.parquet")
    person_photos = len(list((sample_source / person).iterdir()))
    assert summary["quarantined"] == person_photos == len(quarantine)
    assert quarantine.reason.str.contains("outside the raw area").all()
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]
