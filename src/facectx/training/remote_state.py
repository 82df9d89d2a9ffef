"""A stage's resume state kept in object storage, so a training pod that is preempted and started
again (on another node, with an empty disk) continues where it stopped.

Layout under the URI (s3://bucket/prefix): each saved state is uploaded whole under
`step_<N>/`, then `latest.json` is rewritten to point at it, then older states are deleted. A
reader follows `latest.json` only, so a pod killed mid-upload leaves the previous state usable.
Credentials and the endpoint come from the environment (AWS_*), never from params.

Object storage is reached through fsspec's s3fs (what DVC uses too): it uploads and downloads a
state's files concurrently, large ones in parts. It is imported where used: the train step
imports this module on the air-gapped node, which has no S3 client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from facectx.checkpoint import META

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
        import s3fs

        self.uri, self.local_dir = uri.rstrip("/"), Path(local_dir)
        self.bucket, prefix = _split(uri)
        self.root = f"{self.bucket}/{prefix}"
        # An instance of its own (credentials read from the environment now, not those of a cached
        # instance) with no listing cache (another pod may have written since). botocore retries
        # server errors, throttling and dropped connections up to max_attempts; s3fs's own retry
        # loop, which would repeat throttled calls max_attempts times more, is left at one try.
        self.fs = s3fs.S3FileSystem(
            skip_instance_cache=True,
            use_listings_cache=False,
            config_kwargs={"retries": {"total_max_attempts": max_attempts, "mode": "standard"}},
        )
        self.fs.retries = 1

    def _pointer(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.root + POINTER))
        except FileNotFoundError:
            if not self.fs.exists(self.bucket):
                raise RemoteStateError(f"{self.uri}: bucket {self.bucket!r} does not exist; create it first") from None
            return None

    def pull(self) -> int | None:
        """Replace the local resume folder with the latest state in object storage, unless the
        local one is as far along; returns the step pulled (None: nothing pulled)."""
        pointer = self._pointer()
        if pointer is None:
            return None
        local_meta = self.local_dir / META
        if local_meta.is_file() and json.loads(local_meta.read_text()).get("step", -1) >= pointer["step"]:
            return None
        staging = self.local_dir.with_name(self.local_dir.name + ".pulling")  # renamed whole once complete
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        folder = f"{self.root}{pointer['folder']}/"
        self.fs.get([folder + name for name in pointer["files"]], [str(staging / name) for name in pointer["files"]])
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
        self.fs.put([str(folder / name) for name in names], [f"{self.root}{target}/{name}" for name in names])
        pointer = {"folder": target, "step": meta["step"], "files": names}
        self.fs.pipe_file(self.root + POINTER, json.dumps(pointer).encode())
        # Older states, and any a push cut off midway left behind, are of no more use.
        for path in self.fs.ls(self.root, detail=False):
            if path.rstrip("/").rsplit("/", 1)[-1] not in (target, POINTER):
                self._delete(path)

    def clear(self) -> None:
        """The stage finished: its resume state is of no more use (a retry must not resume a
        finished stage)."""
        self._delete(self.root)

    def _delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # nothing kept there
            self.fs.rm(path, recursive=True)
