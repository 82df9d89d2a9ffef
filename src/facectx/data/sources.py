"""Where photos come from: a local folder or an s3:// prefix, laid out <identity>/<photo>.

A source lists its photos (rejecting entries it cannot take, with a reason) and copies one photo's
bytes. S3 access goes through boto3 with retries; credentials and the endpoint come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), never from params.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from facectx.io_utils import printable_path

SPLIT_LIST_NAMES = ("peopleDevTrain.txt", "peopleDevTest.txt")
PAIRS_NAME = "pairsDevTrain.txt"  # optional: same/different pairs that calibrate the evaluation matcher


@dataclass(frozen=True)
class SourcePhoto:
    relative_path: str  # "<identity>/<photo>", '/'-separated
    uri: str  # where it was read from
    size_bytes: int
    etag: str | None  # S3 only: lets a re-run skip unchanged objects without downloading them


@dataclass(frozen=True)
class Rejected:
    relative_path: str
    uri: str
    reason: str


def identity_of(relative_path: str) -> str:
    return relative_path.split("/", 1)[0]


def _is_photo(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(tuple(e.lower() for e in extensions))


class FolderSource:
    def __init__(self, root: str, extensions: tuple[str, ...]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ingest.source {root!r} is not a folder (expected <identity>/<photo> inside)")
        self._real_root = os.path.realpath(self.root)
        self.extensions = extensions

    def scan(self) -> tuple[list[SourcePhoto], list[Rejected]]:
        photos, rejected = [], []
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if not _is_photo(name, self.extensions):
                    continue
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                reason = self._reject_reason(full, rel)
                if reason:
                    rejected.append(Rejected(printable_path(rel), printable_path(full), reason))
                else:
                    photos.append(SourcePhoto(rel, full, os.path.getsize(full), None))
        return photos, rejected

    def _reject_reason(self, full: str, rel: str) -> str | None:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            return f"file name is not valid UTF-8: {os.fsencode(rel)!r}"
        if "/" not in rel:
            return "photo is not inside an identity folder (expected <identity>/<photo>)"
        if os.path.islink(full):
            target = os.path.realpath(full)
            if os.path.commonpath([target, self._real_root]) != self._real_root:
                return f"symlink points outside the source: -> {printable_path(target)}"
            if not os.path.isfile(target):
                return f"broken symlink: -> {printable_path(target)}"
        return None

    def read(self, photo: SourcePhoto) -> bytes:
        with open(photo.uri, "rb") as handle:
            return handle.read()

    def split_lists(self) -> dict[str, bytes]:
        """LFW's identity lists, when they lie in the source folder or its parent."""
        for folder in (self.root, self.root.parent):
            if all((folder / n).is_file() for n in SPLIT_LIST_NAMES):
                names = SPLIT_LIST_NAMES + ((PAIRS_NAME,) if (folder / PAIRS_NAME).is_file() else ())
                return {n: (folder / n).read_bytes() for n in names}
        return {}


class S3Source:
    def __init__(self, uri: str, extensions: tuple[str, ...], max_attempts: int):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"ingest.source {uri!r}: expected s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        self.extensions = extensions
        self.client = boto3.client("s3", config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}))

    def scan(self) -> tuple[list[SourcePhoto], list[Rejected]]:
        photos, rejected = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                rel = key[len(self.prefix):]
                if key.endswith("/") or not _is_photo(rel, self.extensions):
                    continue
                uri = f"s3://{self.bucket}/{key}"
                if "/" not in rel:
                    rejected.append(Rejected(rel, uri, "photo is not inside an identity folder (expected <identity>/<photo>)"))
                    continue
                photos.append(SourcePhoto(rel, uri, int(item["Size"]), item["ETag"].strip('"')))
        photos.sort(key=lambda p: p.relative_path)
        return photos, rejected

    def read(self, photo: SourcePhoto) -> bytes:
        """Download one object; verify its MD5 against the ETag where S3 defines it so
        (single-part uploads: no '-' in the ETag). Retried once on a mismatch."""
        key = photo.uri[len(f"s3://{self.bucket}/"):]
        for attempt in range(2):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            data = response["Body"].read()
            etag = response["ETag"].strip('"')
            if "-" in etag or hashlib.md5(data).hexdigest() == etag:
                return data
        raise IOError(f"checksum mismatch downloading {photo.uri}: MD5 of the bytes differs from ETag {etag}")

    def split_lists(self) -> dict[str, bytes]:
        parent = self.prefix.rstrip("/").rpartition("/")[0]
        for prefix in (self.prefix, parent + "/" if parent else ""):
            found = {}
            for name in SPLIT_LIST_NAMES:
                try:
                    found[name] = self.client.get_object(Bucket=self.bucket, Key=prefix + name)["Body"].read()
                except self.client.exceptions.NoSuchKey:
                    break
            if len(found) == len(SPLIT_LIST_NAMES):
                try:
                    found[PAIRS_NAME] = self.client.get_object(Bucket=self.bucket, Key=prefix + PAIRS_NAME)["Body"].read()
                except self.client.exceptions.NoSuchKey:
                    pass
                return found
        return {}


def open_source(uri: str, extensions: tuple[str, ...], max_attempts: int = 8):
    if uri.startswith("s3://"):
        return S3Source(uri, extensions, max_attempts)
    if "://" in uri:
        raise ValueError(f"ingest.source {uri!r}: only local folders and s3:// prefixes are supported")
    return FolderSource(uri, extensions)
