"""The start of a run: the source listed once into OUT, and the stamp that ties OUT to one model.

listing.parquet fixes which photos each shard holds (shard i = photos i*N .. i*N+N-1, by path), so a
resumed run, or a Kubeflow step that runs a group of shards, sees the same shards. hallucinate.json
names the model weights, the listing and the settings: a run with another model, another source or
other settings is refused rather than mixing its frames with the old ones.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

import pandas as pd

from facectx.bulk.model import ResolvedModel
from facectx.bulk.output import STAMP
from facectx.data.sources import SourcePhoto, open_source

LISTING = "listing.parquet"


class OutputHoldsOtherShards(ValueError):
    """OUT holds shards made by another model, source or settings."""


@dataclass(frozen=True)
class Listing:
    source: str  # folder or s3:// prefix
    photos: list[SourcePhoto]  # sorted by relative_path
    rejected: pd.DataFrame  # what the source refused while listing (relative_path, uri, reason)
    shard_photos: int

    def shard(self, index: int) -> list[SourcePhoto]:
        return self.photos[index * self.shard_photos : (index + 1) * self.shard_photos]

    @property
    def shard_count(self) -> int:
        return -(-len(self.photos) // self.shard_photos)


def list_source(source: str, extensions: tuple[str, ...], max_attempts: int, shard_photos: int) -> Listing:
    photos, rejected = open_source(source, extensions, max_attempts).scan()
    if not photos:
        raise FileNotFoundError(
            f"hallucinate source {source}: no photos found (expected <identity>/<photo> files ending in "
            f"{', '.join(extensions)}{f'; {len(rejected)} refused while listing' if rejected else ''})"
        )
    table = pd.DataFrame([asdict(r) for r in rejected], columns=["relative_path", "uri", "reason"])
    return Listing(source, sorted(photos, key=lambda p: p.relative_path), table, shard_photos)


def listing_bytes(listing: Listing) -> bytes:
    frame = pd.DataFrame([asdict(p) for p in listing.photos], columns=["relative_path", "uri", "size_bytes", "etag"])
    frame["rejected"] = False
    rejected = listing.rejected.assign(size_bytes=0, etag=None, rejected=True)
    buffer = io.BytesIO()
    pd.concat([frame, rejected], ignore_index=True).to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_listing(data: bytes, source: str, shard_photos: int) -> Listing:
    frame = pd.read_parquet(io.BytesIO(data))
    kept = frame[~frame.rejected]
    photos = [SourcePhoto(r.relative_path, r.uri, int(r.size_bytes), r.etag) for r in kept.itertuples()]
    rejected = frame[frame.rejected][["relative_path", "uri", "reason"]].reset_index(drop=True)
    return Listing(source, photos, rejected, shard_photos)


def stamp_bytes(model: ResolvedModel, listing_data: bytes, settings: dict) -> bytes:
    stamp = {
        "model": {
            "weights_sha256": model.weights_sha256,
            "registry_name": model.registry_name,
            "registry_version": model.registry_version,
            "run_id": model.run_id,
            "data_version": model.data_version,
        },
        "listing_sha256": hashlib.sha256(listing_data).hexdigest(),
        "settings": settings,
    }
    return (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode()


def check_stamp(out_uri: str, found: bytes, wanted: bytes) -> None:
    """Refuse an OUT whose shards another model, listing or settings made, naming what differs."""
    if found == wanted:
        return
    old, new = json.loads(found), json.loads(wanted)
    differs = [key for key in ("model", "listing_sha256", "settings") if old.get(key) != new.get(key)]
    what = {"model": "model", "listing_sha256": "source's photos", "settings": "settings"}
    raise OutputHoldsOtherShards(
        f"{out_uri} holds shards made with another {', '.join(what[k] for k in differs)} "
        f"(its {STAMP}: model {_name(old['model'])}; this run: model {_name(new['model'])}). Give an empty OUT, "
        f"or delete {out_uri} to redo it with this model"
    )


def _name(model: dict) -> str:
    version = f"{model['registry_name']} v{model['registry_version']}, " if model["registry_name"] else ""
    return f"{version}weights sha256 {model['weights_sha256'][:12]}"
