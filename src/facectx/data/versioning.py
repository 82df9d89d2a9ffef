"""The data's version as DVC knows it, made and read inside a Kubeflow run.

`push_version` sends folders (the raw photos, each split of the prepared data) to a DVC remote
straight from where they lie (`dvc add --to-remote` in a throwaway DVC repository: no copy, no
cache) and writes their `.dvc` pointer files, under the paths dvc.yaml gives those folders. The
pointers are the version: a clone of the repository holding them gets the same bytes back with
`dvc pull`, and the md5 in each is the one `dvc repro` records in dvc.lock for the same files.

`pull_files` fetches only some files of versioned folders (DVC's granular pull): a training step
fetches its stage's resolutions, not the whole prepared data.

Credentials reach DVC (s3fs) from the environment only; the remote's URL and endpoint are
arguments, written into the throwaway repository's config and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from facectx.data.shards import META_FILE
from facectx.layout import PREPARED_DIR, RAW_DIR

log = logging.getLogger(__name__)

POINTER_SUFFIX = ".dvc"
REMOTE_NAME = "facectx"
DATA_TAG = "facectx.data.dvc."  # + folder path: the md5 of its .dvc pointer, on MLflow runs and model versions
# prepare's outputs in dvc.yaml, each versioned on its own as `dvc repro` does (a split, a file)
PREPARED_OUTS = ("train", "val", "test", META_FILE, "quarantine.parquet", "preview.png")


class VersionError(RuntimeError):
    """A pointer, a remote or a pulled file is missing or not what was asked for."""


@dataclass(frozen=True)
class DataRemote:
    """Where versioned data live: a DVC remote URL (s3://bucket/prefix, or a folder) and, for
    S3 servers other than AWS, their endpoint."""

    url: str
    endpoint_url: str | None = None


def data_folders(raw_dir: str | os.PathLike, prepared_dir: str | os.PathLike) -> dict[str, Path]:
    """The raw photos and prepare's outputs that exist, keyed by their paths in dvc.yaml."""
    parts = {RAW_DIR: Path(raw_dir)}
    parts.update({f"{PREPARED_DIR}/{name}": Path(prepared_dir) / name for name in PREPARED_OUTS})
    return {path: source for path, source in parts.items() if source.exists()}


def pointer_path(pointers_dir: str | os.PathLike, folder: str) -> Path:
    """The .dvc pointer file of a versioned folder (data/prepared/train -> .../data/prepared/train.dvc)."""
    return Path(pointers_dir) / f"{folder}{POINTER_SUFFIX}"


def _throwaway_repo(root: Path, remote: DataRemote, cache_type: str | None = None):
    """A DVC repository without git in `root`, whose default remote is `remote`."""
    from dvc.repo import Repo

    with contextlib.redirect_stdout(io.StringIO()):  # not "Initialized DVC repository." in every step's log
        Repo.init(str(root), no_scm=True)
    repo = Repo(str(root))
    with repo.config.edit() as config:
        config["remote"][REMOTE_NAME] = {"url": remote.url}
        if remote.endpoint_url:
            config["remote"][REMOTE_NAME]["endpointurl"] = remote.endpoint_url
        config["core"]["remote"] = REMOTE_NAME
        if cache_type:
            config["cache"]["type"] = cache_type
    return Repo(str(root))


def push_version(folders: dict[str, str | os.PathLike], remote: DataRemote, pointers_dir: str | os.PathLike) -> dict:
    """Push each folder (or file) to `remote` (key: its path in the repository, e.g.
    data/prepared/train; value: where it lies now) and write its pointer under pointers_dir.
    Objects already in the remote are not sent again. Returns {path: md5}."""
    for folder, source in folders.items():
        if not Path(source).exists():
            raise VersionError(f"cannot version {folder}: {source} does not exist")
    with tempfile.TemporaryDirectory(prefix="facectx-dvc-") as work:
        repo = _throwaway_repo(Path(work), remote)
        versions = {}
        for folder, source in folders.items():
            out = Path(work) / folder
            out.parent.mkdir(parents=True, exist_ok=True)
            repo.add(str(Path(source).resolve()), out=str(out), to_remote=True, remote=REMOTE_NAME)
            target = pointer_path(pointers_dir, folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = pointer_path(work, folder).read_text()
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(target)
            versions[folder] = read_pointer(target)["md5"]
            log.info("versioned %s as %s in %s", folder, versions[folder], remote.url)
    return versions


def read_pointer(path: str | os.PathLike) -> dict:
    """The one output of a .dvc pointer file: md5, size, nfiles, path."""
    path = Path(path)
    if not path.is_file():
        raise VersionError(f"no DVC pointer file {path}")
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise VersionError(f"{path}: expected a .dvc file with one output and its md5, got {outs!r}")
    return outs[0]


def versioned_folders(pointers_dir: str | os.PathLike) -> dict[str, str]:
    """{folder path: md5} of every pointer under pointers_dir."""
    root = Path(pointers_dir)
    return {
        path.relative_to(root).as_posix()[: -len(POINTER_SUFFIX)]: read_pointer(path)["md5"]
        for path in sorted(root.rglob(f"*{POINTER_SUFFIX}"))
    }


def version_tags(pointers_dir: str | os.PathLike) -> dict[str, str]:
    """The data version as tags (one per versioned folder) for MLflow runs and model versions."""
    return {f"{DATA_TAG}{folder}": md5 for folder, md5 in versioned_folders(pointers_dir).items()}


def pull_files(
    pointers_dir: str | os.PathLike,
    remote: DataRemote,
    files: list[str],
    dest: str | os.PathLike,
    missing_ok: bool = False,
) -> dict:
    """Fetch `files` (paths inside versioned folders, e.g. data/prepared/train/target_8.npy, or a
    whole versioned folder) from `remote` into dest/<path>, and nothing else of those folders.
    missing_ok: skip paths the version does not hold (else a VersionError). Returns {"files":
    count, "bytes": bytes written}."""
    root = Path(pointers_dir)
    folders = versioned_folders(root)
    for file in files:
        if not any(file == folder or file.startswith(f"{folder}/") for folder in folders):
            raise VersionError(f"{file} is in none of the versioned folders {sorted(folders)} ({root})")
    Path(dest).mkdir(parents=True, exist_ok=True)
    # Pulled into a repository inside dest: its cache and dest share a disk, so each file is
    # written once (hardlinked out of the cache) and moved into place.
    with tempfile.TemporaryDirectory(prefix=".facectx-dvc-", dir=dest) as work:
        repo = _throwaway_repo(Path(work), remote, cache_type="hardlink,copy")
        for folder in folders:
            target = pointer_path(work, folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(pointer_path(root, folder).read_text())
        repo.pull(targets=[str(Path(work) / file) for file in files])
        counts = {"files": 0, "bytes": 0}
        for file in files:
            pulled = Path(work) / file
            if not pulled.exists() and missing_ok:
                continue
            if not pulled.exists():
                raise VersionError(f"{file} is not in the versioned data ({remote.url})")
            pulled_files = [pulled] if pulled.is_file() else [p for p in pulled.rglob("*") if p.is_file()]
            counts["files"] += len(pulled_files)
            counts["bytes"] += sum(p.stat().st_size for p in pulled_files)
            target = Path(dest) / file
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(pulled, target)
    return counts


def fetch_prepared(
    pointers_dir: str | os.PathLike, remote: DataRemote, names: list[str], dest: str | os.PathLike
) -> dict:
    """Pull meta.json and `names` (paths in the prepared folder, e.g. `shards.split_files`) of the
    versioned prepared data into dest; returns pull_files' counts and the prepared folder."""
    files = [f"{PREPARED_DIR}/{name}" for name in (META_FILE, *names)]
    return {**pull_files(pointers_dir, remote, files, dest), "prepared_dir": str(Path(dest) / PREPARED_DIR)}
