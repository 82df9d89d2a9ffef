"""Decoding TensorFlow.js weights: a weights manifest and its binary shards -> numpy arrays.

A TF.js weights manifest is a list of groups, each naming its shard files (`paths`) and the
weights laid end to end in them (`weights`: name, shape, dtype, optional `quantization`). Both a
layers model's `*-weights_manifest.json` (the identity network, facectx.models.identity) and a
graph model's `model.json` `weightsManifest` (the matcher, facectx.evaluation.tfjs_graph) use it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# TF.js weight dtypes -> numpy, and the storage dtypes its converter quantises to.
DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
QUANTISED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


class TfjsWeightsError(ValueError):
    """The weights manifest or its shards cannot be decoded."""


def decode_weights(
    manifest: list[dict], folder: str | Path, error: type[Exception] = TfjsWeightsError, source: str | Path = ""
) -> dict[str, np.ndarray]:
    """Values of every weight in the manifest, as float32/int32/bool numpy arrays.

    Shard paths are relative to `folder`. Within a group the shard files are concatenated in
    order and the weights follow one another in that buffer; quantised weights are widened back
    (float16 as is, uint8/uint16 affine: q * scale + min). Problems raise `error` (the caller's
    own exception type) with a message naming the weight or the shards, after `source` (the
    manifest's file) where given.
    """
    folder = Path(folder)
    where = f"{source}: " if source else ""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buffer = b"".join(_read_shard(folder / path, error) for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            name, shape, dtype = spec["name"], tuple(spec["shape"]), spec.get("dtype")
            count = math.prod(shape)
            quant = spec.get("quantization")
            if dtype not in DTYPES:
                raise error(f"{where}weight {name!r}: dtype {dtype!r} is not supported")
            if quant and quant.get("dtype") not in QUANTISED:
                raise error(f"{where}weight {name!r}: quantisation {quant} is not supported")
            stored = np.dtype(QUANTISED[quant["dtype"]] if quant else DTYPES[dtype])
            end = offset + count * stored.itemsize
            if end > len(buffer):
                raise error(
                    f"{where}weight {name!r} runs past the end of shards {group['paths']} "
                    f"({end} > {len(buffer)} bytes): truncated or mismatched weight files"
                )
            raw = np.frombuffer(buffer, dtype=stored.newbyteorder("<"), count=count, offset=offset)
            weights[name] = _dequantise(raw, quant, dtype).reshape(shape)
            offset = end
        if offset != len(buffer):
            raise error(
                f"{where}shards {group['paths']} hold {len(buffer)} bytes but the manifest describes {offset}: "
                f"the weights do not belong to this manifest"
            )
    return weights


def _read_shard(path: Path, error: type[Exception]) -> bytes:
    if not path.is_file():
        raise error(f"weight shard {path} named in the weights manifest does not exist")
    return path.read_bytes()


def _dequantise(raw: np.ndarray, quant: dict | None, dtype: str) -> np.ndarray:
    if quant is None or quant["dtype"] == "float16":
        return raw.astype(DTYPES[dtype])
    # uint8/uint16: value = q * scale + min (the converter's affine quantisation), in float32.
    return (raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])).astype(DTYPES[dtype])
