"""OUT, a folder or an s3:// prefix:

    hallucinate.json               the stamp: model weights, source listing and settings that made the shards
    shards/shard-NNNNN/            one whole shard: frames/<identity>/<photo>.<ext>, manifest.parquet, quarantine.parquet
    manifest.parquet               every shard's manifest gathered (one row per hallucinated photo)
    quarantine.parquet             every shard's quarantine gathered (one row per photo left out, with its reason)
    summary.json                   counts: found = written + quarantined

A shard is staged whole, then made visible at once: in a folder by renaming its staging folder
(`shards/.partial-shard-NNNNN`), on S3 (which cannot rename) by writing its `_COMPLETE` marker after
every other object of it. A shard without either is unfinished: a re-run redoes it.
Credentials and the S3 endpoint come from the environment (AWS_*), as for every facectx source.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import boto3
import pandas as pd

from facectx.io_utils import atomic_path

SHARDS = "shards"
STAMP, MANIFEST, QUARANTINE, SUMMARY = "hallucinate.json", "manifest.parquet", "quarantine.parquet", "summary.json"
COMPLETE = "_COMPLETE"
_PARTIAL = ".partial-"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def open_output(uri: str):
    return S3Output(uri) if uri.startswith("s3://") else FolderOutput(uri)


class FolderOutput:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(root)

    def read_bytes(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def write_bytes(self, name: str, data: bytes) -> None:
        with atomic_path(self.root / name) as tmp:
            tmp.write_bytes(data)

    def finished_shards(self) -> set[str]:
        folder = self.root / SHARDS
        return (
            {p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("shard-")}
            if folder.is_dir()
            else set()
        )

    def staging(self, shard: str) -> Path:
        staged = self.root / SHARDS / f"{_PARTIAL}{shard}"
        shutil.rmtree(staged, ignore_errors=True)  # what a killed run left of this shard
        staged.mkdir(parents=True)
        return staged

    def commit(self, shard: str, staged: Path) -> None:
        os.replace(staged, self.root / SHARDS / shard)

    def read_table(self, shard: str, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / SHARDS / shard / name)


class S3Output:
    def __init__(self, uri: str):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"hallucinate out {uri!r}: expected s3://bucket/prefix")
        self.uri, self.bucket = uri, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.session.Session().client("s3")  # credentials and endpoint: the environment's

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def finished_shards(self) -> set[str]:
        found = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + SHARDS + "/"
        ):
            for item in page.get("Contents", []):
                parts = item["Key"][len(self.prefix) :].split("/")
                if len(parts) == 3 and parts[2] == COMPLETE:
                    found.add(parts[1])
        return found

    def staging(self, shard: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"facectx-{shard}-"))

    def commit(self, shard: str, staged: Path) -> None:
        """Every file of the shard, then its marker: a reader that sees the marker sees it whole."""
        try:
            for path in sorted(p for p in staged.rglob("*") if p.is_file()):
                key = f"{self.prefix}{SHARDS}/{shard}/{path.relative_to(staged).as_posix()}"
                self.client.upload_file(str(path), self.bucket, key)
            self.write_bytes(f"{SHARDS}/{shard}/{COMPLETE}", b"")
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def read_table(self, shard: str, name: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(f"{SHARDS}/{shard}/{name}")))
