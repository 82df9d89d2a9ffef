"""A stage's resume state kept in object storage, so a training pod that is preempted and started
again (on another node, with an empty disk) continues where it stopped.

Layout under the URI (s3://bucket/prefix): each saved state is uploaded whole under
`step_<N>/`, then `latest.json` is rewritten to point at it, then older states are deleted. A
reader follows `latest.json` only, so a pod killed mid-upload leaves the previous state usable.
Credentials and the endpoint come from the environment (AWS_*), never from params.

boto3 is imported where used: the train step imports this module on the air-gapped node, which has no boto3.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from facectx.checkpoint import META
from facectx.io_utils import atomic_path

log = logging.getLogger(__name__)

POINTER = "latest.json"


class RemoteStateError(RuntimeError):
    """The resume state in object storage cannot be read or written."""


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"resume URI {uri!r}: expected s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket or not prefix.strip("/"):
        raise ValueError(f"resume URI {uri!r}: expected s3://bucket/prefix (a prefix of its own per stage)")
    return bucket, prefix.strip("/") + "/"


class RemoteResumeState:
    def __init__(self, uri: str, local_dir: str | os.PathLike, max_attempts: int = 8):
        import boto3
        from botocore.config import Config

        self.uri, self.local_dir = uri.rstrip("/"), Path(local_dir)
        self.bucket, self.prefix = _split(uri)
        # A session of its own: credentials are read from the environment now, not reused from
        # whatever boto3's default session resolved first.
        self.client = boto3.session.Session().client(
            "s3", config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"})
        )

    def _pointer(self) -> dict | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + POINTER)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except self.client.exceptions.NoSuchBucket:
            raise RemoteStateError(f"{self.uri}: bucket {self.bucket!r} does not exist; create it first") from None
        return json.loads(body)

    def pull(self) -> int | None:
        """Replace the local resume folder with the latest state in object storage, unless the
        local one is as far along; returns the step pulled (None: nothing pulled)."""
        pointer = self._pointer()
        if pointer is None:
            return None
        local_meta = self.local_dir / META
        if local_meta.is_file() and json.loads(local_meta.read_text()).get("step", -1) >= pointer["step"]:
            return None
        staging = self.local_dir.with_name(self.local_dir.name + ".pulling")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in pointer["files"]:
            with atomic_path(staging / name) as tmp:
                self.client.download_file(self.bucket, f"{self.prefix}{pointer['folder']}/{name}", str(tmp))
        shutil.rmtree(self.local_dir, ignore_errors=True)
        staging.rename(self.local_dir)
        log.info("pulled resume state (step %d) from %s/%s", pointer["step"], self.uri, pointer["folder"])
        return pointer["step"]

    def push(self, folder: str | os.PathLike) -> None:
        """Upload a complete resume folder (meta.json written), then point latest.json at it."""
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        target = f"step_{meta['step']:09d}"
        previous = self._pointer()
        for name in sorted(names, key=lambda n: n == META):  # meta.json last
            self.client.upload_file(str(folder / name), self.bucket, f"{self.prefix}{target}/{name}")
        pointer = {"folder": target, "step": meta["step"], "files": names}
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + POINTER, Body=json.dumps(pointer).encode())
        if previous and previous["folder"] != target:
            self._delete(f"{self.prefix}{previous['folder']}/")

    def clear(self) -> None:
        """The stage finished: its resume state is of no more use (a retry must not resume a
        finished stage)."""
        self._delete(self.prefix)

    def _delete(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
