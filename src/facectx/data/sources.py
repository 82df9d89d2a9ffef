"""Where photos come from: a local folder or an s3:// prefix, laid out <identity>/<photo>.

A source lists its photos (rejecting entries it cannot take, with a reason) and copies one photo's
bytes. S3 access goes through boto3 with retries; credentials and the endpoint come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), never from params.
Two kinds of failure: one photo that cannot be taken (rejected, the rest go on) and the source
itself failing past its retries (SourceUnavailable: the run stops, a re-run continues).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, ResponseStreamingError
from botocore.exceptions import ConnectionError as BotoConnectionError

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


class SourceUnavailable(IOError):
    """The source failed (server errors, throttling, lost connection) after every retry; not the
    photo's fault, so ingest stops rather than quarantining photos that a later run can copy."""


def identity_of(relative_path: str) -> str:
    return relative_path.split("/", 1)[0]


def printable_key(key: str) -> str:
    """A key with control characters (NUL, newline, ...) shown as \\xNN, for reports and logs."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in key)


def unsafe_path_reason(relative_path: str) -> str | None:
    """Why a source's '/'-separated relative path cannot name a file under the raw area, or None.

    S3 keys are arbitrary strings: '..' or a leading '/' would write outside the data folder, and
    '.', empty segments or '\\' would name a file other than the key says (or on Windows, escape).
    """
    if any(unicodedata.category(c) == "Cc" for c in relative_path):
        return "key contains a control character (NUL, newline, ...)"
    if relative_path.startswith("/"):
        return "key is an absolute path (leading '/')"
    if "\\" in relative_path:
        return "key contains a backslash"
    if any(part in ("", ".", "..") for part in relative_path.split("/")):
        return "key has a '..', '.' or empty path segment"
    return None


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
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"ingest.source {uri!r}: expected s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        self.extensions = extensions
        self.max_attempts = max_attempts
        # Standard mode retries 500/502/503/504, throttling (SlowDown) and lost connections, with
        # exponential backoff. total_max_attempts counts the first try (botocore's max_attempts
        # would not: it counts retries).
        # A session of its own: credentials are read from the environment now, not reused from
        # whatever boto3's default session resolved first.
        self.client = boto3.session.Session().client(
            "s3", config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"})
        )

    def scan(self) -> tuple[list[SourcePhoto], list[Rejected]]:
        photos, rejected = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    self._take(item, photos, rejected)
        except Exception as err:
            if failure := self._unavailable(f"s3://{self.bucket}/{self.prefix}", "listing", err):
                raise failure from err
            raise
        photos.sort(key=lambda p: p.relative_path)
        return photos, rejected

    def _take(self, item: dict, photos: list[SourcePhoto], rejected: list[Rejected]) -> None:
        key = item["Key"]
        uri = printable_key(f"s3://{self.bucket}/{key}")
        if not key.startswith(self.prefix):  # a listing is the server's word; check it
            rejected.append(Rejected(printable_key(key), uri, f"key is outside the listed prefix {self.prefix!r}"))
            return
        rel = key[len(self.prefix) :]
        if key.endswith("/") or not _is_photo(rel, self.extensions):
            return
        reason = unsafe_path_reason(rel)
        if reason is None and "/" not in rel:
            reason = "photo is not inside an identity folder (expected <identity>/<photo>)"
        if reason:
            rejected.append(Rejected(printable_key(rel), uri, reason))
        else:
            photos.append(SourcePhoto(rel, uri, int(item["Size"]), item["ETag"].strip('"')))

    def read(self, photo: SourcePhoto) -> bytes:
        """Download one object; verify its MD5 against the ETag where S3 defines it so
        (single-part uploads: no '-' in the ETag). A body cut short or not matching is fetched
        again once (botocore retries failed requests, not the reading of a response's body)."""
        key = photo.uri[len(f"s3://{self.bucket}/") :]
        try:
            for attempt in range(2):
                response = self.client.get_object(Bucket=self.bucket, Key=key)
                try:
                    data = response["Body"].read()
                except (IncompleteReadError, ResponseStreamingError):
                    if attempt:
                        raise
                    continue
                etag = response["ETag"].strip('"')
                if "-" in etag or hashlib.md5(data).hexdigest() == etag:
                    return data
        except Exception as err:
            if failure := self._unavailable(photo.uri, "download", err):
                raise failure from err
            raise
        raise OSError(f"checksum mismatch downloading {photo.uri}: MD5 of the bytes differs from ETag {etag}")

    def _unavailable(self, uri: str, what: str, err: Exception) -> SourceUnavailable | None:
        """A SourceUnavailable naming the URI when err is a server, throttling or connection failure
        (botocore has spent the retries); None for the object's own errors (no such key, denied)."""
        if isinstance(err, ClientError):
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            failing = status >= 500 or status == 429 or err.response.get("Error", {}).get("Code") == "SlowDown"
        else:  # connection refused or lost, timeouts, bodies cut short
            failing = isinstance(err, (BotoConnectionError, HTTPClientError, IncompleteReadError))
        if not failing:
            return None
        return SourceUnavailable(
            f"{what} {uri} failed after {self.max_attempts} attempts (ingest.max_attempts): {type(err).__name__}: {err}"
        )

    def split_lists(self) -> dict[str, bytes]:
        parent = self.prefix.rstrip("/").rpartition("/")[0]
        for prefix in (self.prefix, parent + "/" if parent else ""):
            found = {}
            for name in SPLIT_LIST_NAMES:
                if (data := self._get_optional(prefix + name)) is None:
                    break
                found[name] = data
            if len(found) == len(SPLIT_LIST_NAMES):
                if (pairs := self._get_optional(prefix + PAIRS_NAME)) is not None:
                    found[PAIRS_NAME] = pairs
                return found
        return {}

    def _get_optional(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as err:
            if failure := self._unavailable(f"s3://{self.bucket}/{key}", "download", err):
                raise failure from err
            raise


def open_source(uri: str, extensions: tuple[str, ...], max_attempts: int = 8):
    if uri.startswith("s3://"):
        return S3Source(uri, extensions, max_attempts)
    if "://" in uri:
        raise ValueError(f"ingest.source {uri!r}: only local folders and s3:// prefixes are supported")
    return FolderSource(uri, extensions)
