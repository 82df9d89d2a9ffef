"""Throughput of `facectx hallucinate-dataset` on this machine, and the estimate for CASIA-WebFace
(494,414 photos) on GPU nodes.

    python benchmarks/hallucinate_throughput.py --photos 96            # quick and paper width
    python benchmarks/hallucinate_throughput.py --photos 1024 --models quick

End to end: the same code as the command (facectx.steps.hallucinate_dataset: listing, shards read by
`--workers` processes while the generator takes batches, frames encoded and written, gather) on
LFW photos spread over many identities, with UNTRAINED generators of the quick and the paper
width (speed does not depend on the weights' values). Then each stage alone: the photo stage
(read, decode, face detection, 68 landmarks, crop + mask + pyramid) on one core in this process,
the generator alone at the run's batch size on one thread (as the run has it), the encoder alone on
the generator's frames. Against these: the slowest stage's own rate, and the machine's ceiling
(its cores over the CPU seconds a photo costs in all stages together). Not a test: it prints a
table and writes benchmarks/out/hallucinate_throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASIA_PHOTOS = 494_414
WIDTHS = {"quick": (16, 64), "paper": (64, 512)}  # params.yaml: profiles.quick.model and model:
# One H100, the paper profile's 128-px training stage (benchmarks/README.md, 2026-11-27): 2,432
# images/s at 27 GFLOP a training image (critic, generator, identity and perceptual networks).
H100_TRAIN_IMAGES_S, H100_TRAIN_GFLOP = 2432, 27.0


def sample(lfw: Path, count: int, folder: Path) -> Path:
    """Every k-th LFW photo, as <identity>/<photo>."""
    photos = sorted((lfw / "images").glob("*/*"))
    for photo in photos[:: max(1, len(photos) // count)][:count]:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.parent.name / photo.name)
    return folder


def untrained_checkpoint(name: str, folder: Path, resolutions) -> Path:
    import torch

    from facectx.checkpoint import save_checkpoint
    from facectx.models.cascade import ModelArgs
    from facectx.models.factory import build_generator

    width, max_width = WIDTHS[name]
    args = ModelArgs("cascade", tuple(resolutions), width, max_width, width, 3)
    torch.manual_seed(0)
    generator = build_generator(args, max(resolutions))
    meta = {"stage": max(resolutions), "model_args": dataclasses.asdict(args), "data_version": "untrained"}
    return save_checkpoint(folder / f"{name}-untrained", {"generator": generator}, None, meta)


def end_to_end(params, source: Path, out: Path, checkpoint: Path) -> dict:
    """The command's report, its wall time, and the CPU seconds it used (this process and its
    photo workers, reaped when the run closes its pool)."""
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    cpu_before, started = _cpu_seconds(), time.perf_counter()
    report = hallucinate_dataset_step(params, str(source), str(out), str(checkpoint), track=False)
    report["end_to_end_seconds"] = time.perf_counter() - started
    report["cpu_seconds"] = _cpu_seconds() - cpu_before
    return report


def _cpu_seconds() -> float:
    import resource

    used = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in used)


def photo_stage_alone(params, source: Path, photos: int) -> dict:
    """Seconds per photo of each worker phase, one process, one core (cv2 and dlib single-threaded)."""
    import cv2

    from facectx.bulk.listing import list_source
    from facectx.bulk.photos import PhotoJob, PhotoReader

    cv2.setNumThreads(1)
    listing = list_source(str(source), params.ingest.extensions, 1, 10**9)
    job = PhotoJob(str(source), params.ingest.extensions, 1, params.validate, params.crop, params.landmarks,
                   tuple(params.prepare.resolutions))  # fmt: skip
    reader = PhotoReader(job)
    totals: dict[str, float] = {}
    chosen = listing.photos[:photos]
    for photo in chosen:
        for phase, seconds in reader(photo).seconds.items():
            totals[phase] = totals.get(phase, 0.0) + seconds
    return {phase: seconds / len(chosen) for phase, seconds in totals.items()}


def generator_alone(checkpoint: Path, settings, threads: int = 1, calls: int = 3) -> dict:
    """Frames/s of the generator alone (warmed up) and its forward GFLOP per frame."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from facectx.inference import Hallucinator

    batch = settings.batch_size
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = Hallucinator(checkpoint, "cpu")
        masked = {r: np.random.default_rng(0).integers(0, 255, (batch, r, r, 3), np.uint8) for r in model.resolutions}
        mask = {r: np.full((batch, r, r), 255, np.uint8) for r in model.resolutions}
        model.from_pyramid(masked, mask)  # warm-up
        started = time.perf_counter()
        for _ in range(calls):
            model.from_pyramid(masked, mask)
        rate = batch * calls / (time.perf_counter() - started)
        with FlopCounterMode(display=False) as counter:
            model.from_pyramid({r: v[:1] for r, v in masked.items()}, {r: v[:1] for r, v in mask.items()})
        return {"frames_per_s": rate, "gflop_per_frame": counter.get_total_flops() / 1e9, "threads": threads}
    finally:
        torch.set_num_threads(before)


def encoder_alone(out: Path, settings, frames: int = 256) -> float:
    """CPU seconds encoding one frame takes on one thread, on frames the run wrote: lossless
    encoders' cost depends on the pictures (random pixels encode 3x faster than real frames)."""
    from PIL import Image

    from facectx.bulk.frames import encode_frame

    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("shards/*/frames/*/*"))[:frames]]
    started = time.thread_time()
    for picture in pictures:
        encode_frame(picture, settings.image_format, settings.webp_quality)
    return (time.thread_time() - started) / max(len(pictures), 1)


def gpu_estimate(gflop_per_frame: float, photo_seconds_per_core: float) -> dict:
    """494k photos on 1 and 8 H100 nodes (16 cores each): the generator at the FLOP rate the
    training stage reached on an H100, the photo stage at this machine's per-core rate scaled to
    CASIA's 250x250 photos (detection ~ pixels: x2.8 the 150x150 LFW copy's), 15 of 16 cores."""
    achieved_tflops = H100_TRAIN_IMAGES_S * H100_TRAIN_GFLOP / 1e3
    generator_rate = achieved_tflops * 1e3 / gflop_per_frame
    cpu_rate = 15 / (photo_seconds_per_core * (250 * 250) / (150 * 150))
    node_rate = min(generator_rate, cpu_rate)
    return {
        "h100_generator_frames_per_s": generator_rate,
        "node_cpu_photos_per_s": cpu_rate,
        "node_photos_per_s": node_rate,
        "hours_1_node": CASIA_PHOTOS / node_rate / 3600,
        "hours_8_nodes": CASIA_PHOTOS / (8 * node_rate) / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--models", default="quick,paper")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shard", type=int, default=0, help="photos a shard (0: params.yaml's)")
    parser.add_argument("--checkpoint", default="", help="the quick model's checkpoint (default: an untrained one of "
                        "its width; a trained one, e.g. make run's models/cascade/stage_128/checkpoint, gives real frames "
                        "to the encoder)")  # fmt: skip
    parser.add_argument("--lfw", default=str(REPO.parent / "shared" / "datasets" / "lfw"))
    args = parser.parse_args()

    from facectx.config import load_params

    base = load_params(REPO / "params.yaml")
    h = dataclasses.replace(base.hallucinate, shard_photos=args.shard or base.hallucinate.shard_photos,
                            batch_size=args.batch, workers=args.workers, device="cpu")  # fmt: skip
    params = dataclasses.replace(base, hallucinate=h)
    results = {"load_average": os.getloadavg(), "cores": os.cpu_count(), "photos": args.photos,
               "shard_photos": h.shard_photos, "batch": h.batch_size, "models": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hallucinate-bench-") as tmp:
        source = sample(Path(args.lfw), args.photos, Path(tmp) / "source")
        photo = photo_stage_alone(params, source, min(args.photos, 48))
        results["photo_stage_seconds_per_photo"] = photo
        for name in args.models.split(","):
            checkpoint = (Path(args.checkpoint) if name == "quick" and args.checkpoint
                          else untrained_checkpoint(name, Path(tmp), params.prepare.resolutions))  # fmt: skip
            before = generator_alone(checkpoint, h)  # before and after the run: the machine's speed drifts
            report = end_to_end(params, source, Path(tmp) / f"out-{name}", checkpoint)
            alone = generator_alone(checkpoint, h)
            alone["frames_per_s_before_run"] = before["frames_per_s"]
            alone["encode_seconds"] = encoder_alone(Path(tmp) / f"out-{name}", h)
            results["models"][name] = {"end_to_end": report, "generator_alone": alone, "checkpoint": str(checkpoint),
                                       "gpu": gpu_estimate(alone["gflop_per_frame"], sum(photo.values()))}  # fmt: skip
        results["load_average_after"] = os.getloadavg()
    print_table(results, args.workers)
    out = REPO / "benchmarks" / "out" / "hallucinate_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))


def print_table(results: dict, workers: int) -> None:
    photo = results["photo_stage_seconds_per_photo"]
    per_photo = sum(photo.values())
    print(f"load average before/after: {results['load_average']} / {results['load_average_after']}")
    print("photo stage alone, ms per photo on one core: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in photo.items()))
    print(f"photo stage alone: {1 / per_photo:.1f} photos/s a core, {workers / per_photo:.1f} with {workers} workers")
    for name, r in results["models"].items():
        e, g, gpu = r["end_to_end"], r["generator_alone"], r["gpu"]
        written = max(e["written"], 1)
        phases = {k[len("seconds_") :]: v for k, v in e.items() if k.startswith("seconds_")}
        weights = "untrained" if r["checkpoint"].endswith("-untrained") else r["checkpoint"]
        print(f"\n{name} width ({weights}): {e['photos_found']} photos in {e['end_to_end_seconds']:.1f} s = "
              f"{e['photos_found'] / e['end_to_end_seconds']:.1f} photos/s end to end "
              f"(shards alone {e['photos_per_second']:.1f}/s); seconds: {phases}")  # fmt: skip
        generator = (g["frames_per_s"] + g["frames_per_s_before_run"]) / 2
        print(f"  generator alone: {generator:.1f} frames/s on {g['threads']} thread(s) (before the run "
              f"{g['frames_per_s_before_run']:.1f}, after {g['frames_per_s']:.1f}), "
              f"{g['gflop_per_frame']:.2f} GFLOP a frame; in the run {written / max(phases.get('generator', 1e-9), 1e-9):.1f}"
              f" frames/s")  # fmt: skip
        print(f"  encoder alone: {g['encode_seconds'] * 1e3:.2f} ms a frame the run wrote, on one thread")
        busy = e["cpu_seconds"] / (e["end_to_end_seconds"] * results["cores"])
        print(f"  CPU used: {e['cpu_seconds']:.1f} s over {e['end_to_end_seconds']:.1f} s on {results['cores']} cores: "
              f"{busy:.0%} busy, {e['cpu_seconds'] / e['photos_found'] * 1e3:.1f} CPU ms a photo in the run")  # fmt: skip
        slowest = min(workers / per_photo, generator, 1 / g["encode_seconds"])
        cpu_per_photo = per_photo + 1 / generator + g["encode_seconds"]
        ceiling = results["cores"] / cpu_per_photo
        rate = e["photos_per_second"]
        print(f"  slowest stage alone {slowest:.1f}/s; the {results['cores']} cores' ceiling {ceiling:.1f}/s "
              f"({cpu_per_photo * 1e3:.1f} CPU ms a photo); the shards ran at {rate / slowest:.0%} of the slowest "
              f"stage, {rate / ceiling:.0%} of the ceiling")  # fmt: skip
        print(f"  GPU estimate: H100 generator {gpu['h100_generator_frames_per_s']:.0f} frames/s, a 16-core node's "
              f"photo stage {gpu['node_cpu_photos_per_s']:.0f}/s -> {gpu['hours_1_node']:.1f} h on one H100 node, "
              f"{gpu['hours_8_nodes']:.2f} h on 8")  # fmt: skip


if __name__ == "__main__":
    main()
