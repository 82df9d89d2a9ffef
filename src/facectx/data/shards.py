"""Prepared data on disk: the one module that names the shard files, writes a split's shards and
the folder's meta.json, and reads them back.

    meta.json                 resolutions, crop, mirror, rows per split, arrays (+ derived: a pack's rebuild)
    <split>/target_<r>.npy    (N, r, r, 3) uint8   the full photo frame
    <split>/masked_<r>.npy    (N, r, r, 3) uint8   the face only, everything else black
    <split>/mask_<r>.npy      (N, r, r)    uint8   face mask, 255 inside (soft at low r)
    <split>/valid_<r>.npy     (N, r, r)    uint8   255 where the frame lies inside the photo, 0 where
                                                   the crop ran past its edge (padded black)
    <split>/landmarks.npy     (N, 68, 2)   float32 68 points in the 128 frame
    <split>/index.parquet     row -> photo, identity, mirrored
Training can np.load(..., mmap_mode="r") each file or move it to the GPU in one copy.

Writing: `SplitWriter` (one split, streamed), `write_meta`. Reading: `read_meta`, `split_folder`
(a split that must exist), `SplitShards` (one split's index and memory-mapped arrays),
`split_files` (the files a reader of some resolutions opens),
`subset_rows`/`split_rows` (the seeded subset every reader takes), `data_version`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from facectx.io_utils import atomic_path, write_json, write_parquet

if TYPE_CHECKING:
    from facectx.data.examples import Example

META_FILE = "meta.json"
INDEX_FILE = "index.parquet"
INDEX_COLUMNS = ["row", "relative_path", "identity", "mirrored"]
IMAGE_ARRAYS = ("target", "masked", "mask", "valid")  # one file per resolution
ARRAYS = (*IMAGE_ARRAYS, "landmarks")  # landmarks: one file, in the largest frame
_CHANNELS = {"target": (3,), "masked": (3,), "mask": (), "valid": ()}  # a row is (r, r, *channels)


class DataError(RuntimeError):
    """Prepared data are missing or do not match what a reader needs."""


def array_file(kind: str, resolution: int | None = None) -> str:
    """The file name of one array of a split: `target_128.npy`, ..., `landmarks.npy`."""
    if kind == "landmarks":
        return "landmarks.npy"
    if kind not in IMAGE_ARRAYS or resolution is None:
        raise ValueError(f"no shard file for array {kind!r} at resolution {resolution!r}")
    return f"{kind}_{resolution}.npy"


def split_files(split: str, resolutions) -> list[str]:
    """The files a reader of `split` at `resolutions` opens, relative to the prepared folder: its
    index, its landmarks and each image array at those resolutions (what a training stage fetches)."""
    arrays = [array_file(kind, r) for r in resolutions for kind in IMAGE_ARRAYS]
    return [f"{split}/{name}" for name in (INDEX_FILE, array_file("landmarks"), *arrays)]


# --------------------------------------------------------------------------- meta.json


def write_meta(
    prepared_dir: str | os.PathLike,
    resolutions: tuple[int, ...],
    crop: dict,
    mirror: bool,
    rows: dict[str, int],
    derived: dict | None = None,
) -> None:
    """The prepared folder's meta.json; `derived` marks data rebuilt elsewhere (an air-gap pack)."""
    meta = {"resolutions": list(resolutions), "crop": crop, "mirror": mirror, "rows": rows, "arrays": list(ARRAYS)}
    if derived is not None:
        meta["derived"] = derived
    write_json(Path(prepared_dir) / META_FILE, meta)


def read_meta(prepared_dir: str | os.PathLike) -> dict:
    return json.loads((Path(prepared_dir) / META_FILE).read_text())


def has_meta(prepared_dir: str | os.PathLike) -> bool:
    return (Path(prepared_dir) / META_FILE).is_file()


def data_version(prepared_dir: str | os.PathLike) -> str:
    """A short fingerprint of the prepared data: meta.json plus each split's index."""
    digest = hashlib.sha256()
    prepared_dir = Path(prepared_dir)
    for path in [prepared_dir / META_FILE, *sorted(prepared_dir.glob(f"*/{INDEX_FILE}"))]:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- reading


def split_folder(prepared_dir: str | os.PathLike, split: str) -> Path:
    """A split's folder, which must hold prepared shards (DataError otherwise)."""
    folder = Path(prepared_dir) / split
    if not (folder / INDEX_FILE).is_file():
        raise DataError(f"no prepared {split} split in {prepared_dir}: run `facectx prepare` (dvc repro prepare) first")
    return folder


def read_index(folder: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """A split folder's index (row -> photo, identity, mirrored)."""
    return pd.read_parquet(Path(folder) / INDEX_FILE, columns=columns)


def subset_rows(index: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row numbers of a seeded random subset of `n` rows spread over identities, sorted.

    The shards are in path order, so their first rows are a few surnames (the first 3,000 LFW
    training rows: all "A", 150 of them one person). Here photos are dealt round-robin over the
    identities in a seeded random order: one photo of every person first, then a second photo
    of those who have one, ..., so n photos cover min(n, identities) people. A photo's rows stay
    together (in the train split a photo and its mirrored copy, so a subset keeps the split's
    left/right balance); n photos' rows are cut to exactly n rows. n = 0 (or n >= rows): every
    row. Sorted, so memory-mapped reads stay sequential."""
    if n <= 0 or n >= len(index):
        return np.arange(len(index))
    rng = np.random.default_rng(seed)
    rows_of = index.groupby("relative_path", sort=False).indices  # photo -> its row positions
    photos = index.drop_duplicates("relative_path")[["relative_path", "identity"]]
    photos = photos.iloc[rng.permutation(len(photos))]  # random photo order within each identity
    people = np.sort(photos.identity.unique())
    person_order = pd.Series(rng.permutation(len(people)), index=people)
    round_ = photos.groupby("identity", sort=False).cumcount().to_numpy()  # 0 for a person's first photo, ...
    dealt = photos.relative_path.to_numpy()[np.lexsort((person_order[photos.identity].to_numpy(), round_))]
    rows = np.concatenate([rows_of[photo] for photo in dealt])[:n]
    return np.sort(rows)


def split_rows(folder: str | os.PathLike, n: int, seed: int) -> np.ndarray:
    """`subset_rows` of a prepared split's index."""
    return subset_rows(read_index(folder, columns=["relative_path", "identity"]), n, seed)


class SplitShards:
    """One prepared split, read-only: its index and its arrays, each memory-mapped on demand.

    `meta` is the prepared folder's meta.json, read when first needed unless given. The split's
    folder is not checked here (`split_folder` does that)."""

    def __init__(self, prepared_dir: str | os.PathLike, split: str, meta: dict | None = None):
        self.prepared_dir = Path(prepared_dir)
        self.split = split
        self.folder = self.prepared_dir / split
        if meta is not None:
            self.meta = meta

    @functools.cached_property
    def meta(self) -> dict:
        return read_meta(self.prepared_dir)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.meta["resolutions"])

    @property
    def frame_size(self) -> int:
        """The largest resolution: the full-size frame the landmarks are in."""
        return max(self.meta["resolutions"])

    def path(self, kind: str, resolution: int | None = None) -> Path:
        return self.folder / array_file(kind, resolution)

    def has(self, kind: str, resolution: int | None = None) -> bool:
        return self.path(kind, resolution).is_file()

    def stored_resolutions(self, kind: str = "target") -> list[int]:
        """The resolutions this split holds `kind` files for, as found on disk, sorted."""
        return sorted(int(p.stem.split("_")[1]) for p in self.folder.glob(f"{kind}_*.npy"))

    def array(self, kind: str, resolution: int | None = None) -> np.ndarray:
        """The whole array, memory-mapped read-only."""
        return np.load(self.path(kind, resolution), mmap_mode="r")

    def index(self, columns: list[str] | None = None) -> pd.DataFrame:
        return read_index(self.folder, columns)

    def subset(self, n: int, seed: int) -> np.ndarray:
        """`split_rows` of this split: n rows spread over identities (0: every row)."""
        return split_rows(self.folder, n, seed)


# --------------------------------------------------------------------------- writing


class NpyStreamWriter:
    """Append rows to a .npy file whose final row count is only known at the end.

    The header is written for `max_rows` and rewritten (padded to the same length) on close, so
    rows stream straight to disk and memory stays flat. The file appears under its final name
    only when `close()` succeeds.
    """

    def __init__(self, path: str | os.PathLike, row_shape: tuple[int, ...], dtype, max_rows: int):
        self.path = Path(path)
        self.row_shape, self.dtype = tuple(row_shape), np.dtype(dtype)
        self._header_len = len(self._header(max_rows))
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - stays open across append() calls; close() closes it
        self._file.write(b"\0" * self._header_len)
        self.rows = 0

    def _header(self, rows: int) -> bytes:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        magic = np.lib.format.magic(1, 0)
        # 64-byte alignment for the data; +1 for the trailing newline, +2 for the length field.
        total = len(magic) + 2 + len(text) + 1
        pad = (-total) % 64 + 64  # spare room so a shorter row count fits in the same length
        return magic + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n"

    def append(self, row: np.ndarray) -> None:
        row = np.ascontiguousarray(row, dtype=self.dtype)
        if row.shape != self.row_shape:
            raise ValueError(f"{self.path.name}: row shape {row.shape} != {self.row_shape}")
        self._file.write(row.tobytes())
        self.rows += 1

    def close(self) -> None:
        header = self._header(self.rows)
        # Same number of bytes as reserved: pad the new header's spaces to match.
        header = header[:-1].ljust(self._header_len - 1, b" ") + b"\n"
        length = self._header_len - len(np.lib.format.magic(1, 0)) - 2
        header = header[:8] + length.to_bytes(2, "little") + header[10:]
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        self._atomic.__exit__(None, None, None)


class SplitWriter:
    """Streams the examples of one split into its shard files."""

    def __init__(self, folder: Path, resolutions: tuple[int, ...], max_rows: int):
        self.folder = folder
        self.writers = {}
        for r in resolutions:
            for kind in IMAGE_ARRAYS:
                shape = (r, r, *_CHANNELS[kind])
                self.writers[(kind, r)] = NpyStreamWriter(folder / array_file(kind, r), shape, np.uint8, max_rows)
        self.writers[("landmarks", 0)] = NpyStreamWriter(
            folder / array_file("landmarks"), (68, 2), np.float32, max_rows
        )
        self.index = []

    def add(self, example: Example, relative_path: str, identity: str, mirrored: bool) -> None:
        for (kind, r), writer in self.writers.items():
            writer.append(example.landmarks if kind == "landmarks" else getattr(example, kind)[r])
        self.index.append(
            {"row": len(self.index), "relative_path": relative_path, "identity": identity, "mirrored": mirrored}
        )

    def close(self) -> int:
        for writer in self.writers.values():
            writer.close()
        write_parquet(self.folder / INDEX_FILE, pd.DataFrame(self.index, columns=INDEX_COLUMNS))
        return len(self.index)
