"""Compact uint8 shards: one .npy per (split, array, resolution), memory-mappable, plus an index.

    <split>/target_<r>.npy    (N, r, r, 3) uint8   the full photo frame
    <split>/masked_<r>.npy    (N, r, r, 3) uint8   the face only, everything else black
    <split>/mask_<r>.npy      (N, r, r)    uint8   face mask, 255 inside (soft at low r)
    <split>/valid_<r>.npy     (N, r, r)    uint8   255 where the frame lies inside the photo, 0 where
                                                   the crop ran past its edge (padded black)
    <split>/landmarks.npy     (N, 68, 2)   float32 68 points in the 128 frame
    <split>/index.parquet     row -> photo, identity, mirrored
Training can np.load(..., mmap_mode="r") each file or move it to the GPU in one copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facectx.io_utils import atomic_path


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
