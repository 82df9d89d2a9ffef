"""version: the Kubeflow run's data versioning step, and what later steps fetch by that version.

`version_data_step` pushes the ingested photos and prepare's outputs to the DVC remote and writes
their .dvc pointers (the run's data version: `dvc pull` in a clone holding them gets the same
bytes; the md5s are the ones `dvc repro` records in dvc.lock). Later steps receive the pointers,
not the data, and fetch only what they read (`fetch_stage_data`, `fetch_evaluation_data`,
`fetch_example_photo`). Locally, DVC
itself versions the same folders (dvc.yaml), so no CLI command calls this.
"""

from __future__ import annotations

import os
from pathlib import Path

from facectx.data import versioning
from facectx.data.shards import INDEX_FILE, read_index, split_files
from facectx.data.versioning import DataRemote
from facectx.evaluation.lfw_calibration import DEV_TRAIN_PAIRS, pairs_scored, read_lfw_pairs
from facectx.evaluation.photo_sets import files_read
from facectx.layout import RAW_DIR


def version_data_step(
    raw_dir: str | os.PathLike, prepared_dir: str | os.PathLike, remote: DataRemote, pointers_dir: str | os.PathLike
) -> dict:
    """Push raw and prepared data to `remote`; pointers under pointers_dir; returns
    {"versions": {path: md5}, "tags": the MLflow tags of this data version}."""
    versions = versioning.push_version(versioning.data_folders(raw_dir, prepared_dir), remote, pointers_dir)
    return {"versions": versions, "tags": versioning.version_tags(pointers_dir)}


def fetch_stage_data(
    pointers_dir: str | os.PathLike,
    remote: DataRemote,
    stage: int,
    resolutions: tuple[int, ...],
    dest: str | os.PathLike,
) -> dict:
    """What a training stage reads: the train and val splits' index, landmarks and image arrays at
    every resolution up to `stage` (the stage's input pyramid; its losses use these and the
    landmarks), and the test split's index (with meta.json, what the data version recorded in
    each checkpoint is computed from). Returns fetch_prepared's counts and the folder to train from."""
    needed = [r for r in resolutions if r <= stage]
    names = [name for split in ("train", "val") for name in split_files(split, needed)] + [f"test/{INDEX_FILE}"]
    return versioning.fetch_prepared(pointers_dir, remote, names, dest)


def fetch_evaluation_data(
    pointers_dir: str | os.PathLike,
    remote: DataRemote,
    resolutions: tuple[int, ...],
    calibration_pairs: int,
    dest: str | os.PathLike,
) -> dict:
    """What evaluation reads: its files of the test, val and train splits (photo_sets.files_read),
    and for the matcher's calibration LFW's DevTrain pairs file with the photos of the pairs it
    scores (evaluate.calibration_pairs of each kind; 0: all). Returns the prepared and raw
    folders to evaluate from, and the bytes fetched."""
    fetched = versioning.fetch_prepared(pointers_dir, remote, files_read(resolutions), dest)
    lists = f"{RAW_DIR}/{DEV_TRAIN_PAIRS}"
    versioning.pull_files(pointers_dir, remote, [lists], dest, missing_ok=True)
    raw_dir = Path(dest) / RAW_DIR
    if (raw_dir / DEV_TRAIN_PAIRS).is_file():
        scored = pairs_scored(read_lfw_pairs(raw_dir / DEV_TRAIN_PAIRS), calibration_pairs or None)
        photos = sorted({f"{RAW_DIR}/{photo}" for pair in scored for photo in pair[:2]})
        fetched["bytes"] += versioning.pull_files(pointers_dir, remote, photos, dest, missing_ok=True)["bytes"]
    return {"prepared_dir": fetched["prepared_dir"], "raw_dir": str(raw_dir), "bytes": fetched["bytes"]}


def fetch_example_photo(pointers_dir: str | os.PathLike, remote: DataRemote, dest: str | os.PathLike) -> Path:
    """Register's input example, and nothing more: the test split's index, then the raw file of
    its first photo (the one `serving.example_photo_from_prepared` would pick)."""
    fetched = versioning.fetch_prepared(pointers_dir, remote, [f"test/{INDEX_FILE}"], dest)
    index = read_index(Path(fetched["prepared_dir"]) / "test")
    relative = index.loc[~index.mirrored, "relative_path"].iloc[0]
    photo = f"{RAW_DIR}/images/{relative}"
    versioning.pull_files(pointers_dir, remote, [photo], dest)
    return Path(dest) / photo
