"""Training throughput and model FLOP utilisation per stage, fast path beside a plain one.

    python benchmarks/train_throughput.py --prepared data/prepared --profile paper [--compile]
    python benchmarks/train_throughput.py --prepared data/prepared --profile paper --count --batch-size 2

For each stage, the same model and batch size run three ways:
  fast:  the trainer as the paper profile runs it on a GPU: shards resident on the GPU, bf16
         autocast, channels_last, the whole step replayed as a CUDA graph (train.cuda_graphs;
         with --compile the generator and critic are torch.compiled first: fused kernels,
         recorded the same way; --compile-mode reduce-overhead: compile's own graphs instead)
  eager: the same without the CUDA graph (the trainer of the first GPU visit)
  plain: fp32, eager, a standard DataLoader reading the memory-mapped shards with worker processes
Reported: images/s, achieved TFLOP/s (FLOPs of one full training step — critic and generator
phases, identity and perceptual networks included — counted with torch's FlopCounterMode), and
that as a share of the bf16 matrix-multiply peak measured on the same device in the same run.

--count (runs on a CPU): no timing; per stage, the FLOPs of one training step per image and the
number of aten ops it dispatches (on a GPU roughly a kernel launch each, views aside), with the identity
and perceptual losses sharing one pass of the dlib ResNet and with a pass each. The optimizers
use their multi-tensor (foreach) update, as they do by default on CUDA, so the op count is the
GPU's; bf16 autocast (CUDA only) would add its casts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO))  # run as a script, benchmarks/ is importable from the repository root

from benchmarks.plain_loader import ShardDataset, batch_from_items  # noqa: E402
from facectx.config import parse_params, resolve_params_text  # noqa: E402
from facectx.data.shards import SplitShards  # noqa: E402
from facectx.steps.train import stage_trainer  # noqa: E402
from facectx.training.graphed_step import GraphedStep  # noqa: E402
from facectx.training.loop import StageTrainer, stage_batch_size  # noqa: E402


def matmul_peak_tflops(device: torch.device, size: int = 8192, repeats: int = 50) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type != "cuda":
        size, repeats = 1024, 5
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(trainer: StageTrainer, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer._train_step(batch)
    return float(counter.get_total_flops())


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched (forward, backward and optimizer), views apart."""

    def __init__(self):
        super().__init__()
        self.ops, self.views = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.views += bool(getattr(func, "is_view", False))
        return func(*args, **(kwargs or {}))


def count_step(trainer: StageTrainer, batch) -> dict:
    """FLOPs per image and aten ops of one training step, with the dlib pass shared and not."""
    from torch.utils.flop_counter import FlopCounterMode

    for optimizer in (trainer.opt_g, trainer.opt_d):
        for group in optimizer.param_groups:
            group["foreach"] = True  # CUDA's default: one multi-tensor op per update, not one per parameter
    trainer._train_step(batch)  # the first step also creates the optimizer state
    result = {}
    for name, shared in (("shared_dlib_pass", True), ("separate_dlib_passes", False)):
        trainer.loss.share_face_pass = shared
        with FlopCounterMode(display=False) as flops, OpCounter() as ops:
            trainer._train_step(batch)
        result[name] = {
            "gflop_per_image": round(flops.get_total_flops() / trainer.batch_size / 1e9, 2),
            "aten_ops": ops.ops,
            "aten_ops_not_views": ops.ops - ops.views,
        }
    return result


def measure(step, inputs, trainer: StageTrainer, steps: int, warmup: int) -> tuple[float, float]:
    """Images/s of `step` over `inputs` (a generator function) after `warmup` steps, and the
    seconds the warm-up took (compilation and the CUDA graph's recording happen there)."""
    iterator = iter(inputs())
    start = time.perf_counter()
    for _ in range(warmup):
        step(next(iterator))
    _sync(trainer.device)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step(next(iterator))
    _sync(trainer.device)
    return steps * trainer.batch_size / (time.perf_counter() - start), warmup_seconds


def resident_rows(trainer):
    """Batches of shuffled row indices on the device, as the trainer's loop hands them out."""

    def gen():
        rows, size = trainer.train_data.rows, trainer.batch_size
        while True:
            order = torch.randperm(rows).to(trainer.device)
            for b in range(rows // size):
                yield order[b * size : (b + 1) * size]

    return gen


def resident_batches(trainer):
    def gen():
        for rows in resident_rows(trainer)():
            yield trainer.train_data.batch(rows)

    return gen


def loader_batches(trainer, prepared: Path, workers: int):
    needed = trainer.train_data.resolutions
    dataset = ShardDataset(prepared, "train", needed, trainer.train.max_train_rows, trainer.train.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=trainer.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=trainer.device.type == "cuda",
        persistent_workers=workers > 0,
    )

    def gen():
        while True:
            for items in loader:
                yield batch_from_items(items, needed, trainer.device)

    return gen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--profile", default="paper", help="params profile to size the model (default: %(default)s)")
    parser.add_argument("--stages", default="8,16,32,64,128")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain version")
    parser.add_argument(
        "--max-rows", type=int, default=4096, help="training rows made resident (0: all; speed does not depend on it)"
    )
    parser.add_argument("--variants", default="fast,eager,plain", help="which of fast, eager, plain to run")
    parser.add_argument("--compile", action="store_true", help="fast: torch.compile the generator and critic too")
    parser.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="one batch size for every stage (default: train.batch_size)"
    )
    parser.add_argument("--count", action="store_true", help="FLOPs and aten ops per step only (runs on a CPU)")
    parser.add_argument(
        "--out", default=None, help="default: benchmarks/out/train_throughput.json (or train_step_counts.json)"
    )
    args = parser.parse_args()

    params = parse_params(
        resolve_params_text(Path(args.params).read_text(), args.profile, where=args.params), args.params
    )
    if args.batch_size:
        params = dataclasses.replace(
            params, train=dataclasses.replace(params.train, batch_size=(args.batch_size,) * len(params.train.stages))
        )
    schedule_rows = params.train.max_train_rows  # the profile's (0: all), before the benchmark's own
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, max_train_rows=args.max_rows))
    stages = [int(s) for s in args.stages.split(",")]
    default_out = "train_step_counts.json" if args.count else "train_throughput.json"
    out = Path(args.out or REPO / "benchmarks" / "out" / default_out)
    if args.count:
        count(params, stages, Path(args.prepared), out)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak_tflops(device)
    work = Path("/tmp/facectx-bench-train")
    # The schedule's steps on the profile's training rows (the benchmark itself may load fewer).
    all_rows = len(SplitShards(args.prepared, "train").index(columns=["identity"]))
    all_rows = min(all_rows, schedule_rows) if schedule_rows > 0 else all_rows
    rows = []
    for stage in stages:
        batch_size = stage_batch_size(params.train, stage)
        planned_steps = params.train.epochs[params.train.stages.index(stage)] * (all_rows // batch_size)
        result = {"stage": stage, "batch_size": batch_size, "planned_steps": planned_steps}
        for name, precision, channels_last, compiled, graphs in (
            ("fast", "bf16", True, args.compile, not (args.compile and args.compile_mode == "reduce-overhead")),
            ("eager", "bf16", True, False, False),
            ("plain", "fp32", False, False, False),
        ):
            if name not in args.variants.split(","):
                continue
            variant = dataclasses.replace(
                params,
                train=dataclasses.replace(
                    params.train,
                    precision=precision,
                    channels_last=channels_last,
                    compile=compiled,
                    compile_mode=args.compile_mode,
                    cuda_graphs=graphs,
                    device=device.type,
                    earlier_blocks="finetune",
                ),
            )
            # Earlier blocks start untrained here: throughput does not depend on their weights.
            trainer = stage_trainer(
                variant, stage, Path(args.prepared), work / name, None, work / name / "resume", require_previous=False
            )
            if name == "plain":
                images_per_s, warmup_seconds = measure(
                    trainer._train_step,
                    loader_batches(trainer, Path(args.prepared), args.workers),
                    trainer,
                    args.steps,
                    args.warmup,
                )
            else:  # the trainer's own step: the CUDA graph (when on) is recorded during the warm-up
                warmup = max(args.warmup, GraphedStep.WARMUP_STEPS + 1)  # the graph is recorded before timing
                images_per_s, warmup_seconds = measure(
                    trainer.train_step, resident_rows(trainer), trainer, args.steps, warmup
                )
            flops = step_flops(trainer, next(iter(resident_batches(trainer)())))
            tflops = flops / trainer.batch_size * images_per_s / 1e12
            result[name] = {
                "images_per_s": round(images_per_s, 1),
                "ms_per_step": round(1000 * trainer.batch_size / images_per_s, 2),
                "stage_seconds": round(planned_steps * trainer.batch_size / images_per_s, 1),
                "warmup_seconds": round(warmup_seconds, 1),
                "tflops": round(tflops, 2),
                "mfu_of_matmul_peak": round(tflops / peak, 4),
                **(
                    {"cuda_graphs": trainer.graphed is not None and trainer.graphed.graph is not None} if graphs else {}
                ),
                **({"cuda_graph_failure": trainer.graph_failure} if trainer.graph_failure else {}),
            }
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for a, b in (("fast", "plain"), ("fast", "eager"), ("eager", "plain")):
            if a in result and b in result:
                result[f"speedup_{a}_vs_{b}"] = round(result[a]["images_per_s"] / result[b]["images_per_s"], 2)
        rows.append(result)
        print(json.dumps(result), flush=True)
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "matmul_peak_tflops": round(peak, 1),
        "torch": torch.__version__,
        "stages": rows,
    }
    write_report(out, report)


def count(params, stages: list[int], prepared: Path, out: Path) -> None:
    work = Path("/tmp/facectx-bench-count")
    rows = []
    for stage in stages:
        variant = dataclasses.replace(
            params, train=dataclasses.replace(params.train, device="cpu", earlier_blocks="finetune")
        )
        trainer = stage_trainer(variant, stage, prepared, work, None, work / "resume", require_previous=False)
        batch = trainer.train_data.batch(torch.arange(trainer.batch_size))
        result = {"stage": stage, "batch_size": trainer.batch_size, **count_step(trainer, batch)}
        rows.append(result)
        print(json.dumps(result), flush=True)
    write_report(out, {"device": "cpu", "torch": torch.__version__, "model_width": params.model.width, "stages": rows})


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
