"""Throughput of the data steps on this machine: validate (decode, faces, 68 landmarks, the
great-expectations suite) + prepare (crops, masks, pyramid, splits, shards, preview).

    python benchmarks/prepare_throughput.py --photos 2000      # the issue's 2,000-photo figure
    python benchmarks/prepare_throughput.py --all              # the whole LFW copy, ingest included

Reports photos/s through validate + prepare, each step's seconds and the peak RSS of any process
(the parent or a worker). Not a test: it prints figures and writes benchmarks/out/*.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from facectx.config import load_params  # noqa: E402
from facectx.data.ingest import ingest  # noqa: E402
from facectx.data.prepare import prepare  # noqa: E402
from facectx.data.validate import validate  # noqa: E402


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def spread_sample(lfw: Path, count: int, folder: Path) -> Path:
    """Every k-th LFW photo (many identities, as in real data), copied as <identity>/<photo>."""
    photos = sorted((lfw / "images").glob("*/*"))
    step = max(1, len(photos) // count)
    images = folder / "images"
    for photo in photos[::step][:count]:
        (images / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, images / photo.parent.name / photo.name)
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        shutil.copy(lfw / name, folder / name)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--all", action="store_true", help="the whole LFW copy instead of a sample")
    parser.add_argument("--lfw", default=str(REPO.parent / "shared" / "datasets" / "lfw"))
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp folder, removed after)")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    params = load_params(REPO / "params.yaml")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="facectx-bench-"))
    lfw = Path(args.lfw)
    source = lfw / "images" if args.all else spread_sample(lfw, args.photos, work / "source")
    import dataclasses

    timings = {}
    start = time.perf_counter()
    summary = ingest(dataclasses.replace(params.ingest, source=str(source)), work / "raw")
    timings["ingest_s"] = time.perf_counter() - start
    start = time.perf_counter()
    validate(work / "raw", work / "validated", params.validate, params.crop, params.landmarks)
    timings["validate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics = prepare(work / "raw", work / "validated", work / "prepared", params.prepare, params.crop, params.validate)
    timings["prepare_s"] = time.perf_counter() - start

    photos = summary["photos_found"]
    data_steps = timings["validate_s"] + timings["prepare_s"]
    result = {
        "photos": photos,
        "prepared": metrics["prepared"],
        "quarantined": metrics["quarantined"],
        "shard_rows": sum(v for k, v in metrics.items() if k.startswith("rows_")),
        **{k: round(v, 2) for k, v in timings.items()},
        "validate_plus_prepare_photos_per_s": round(photos / data_steps, 1),
        "end_to_end_s": round(sum(timings.values()), 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "workers": params.validate.workers,
        "mirror": params.prepare.mirror,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"prepare_{'all' if args.all else photos}.json").write_text(json.dumps(result, indent=2))
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
