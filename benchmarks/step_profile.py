"""Where one training step's device time goes, op by op (issue 11's speed work).

    python benchmarks/step_profile.py --prepared data/prepared --params params.yaml --profile paper --stage 128

Builds the stage's trainer (the profile's widths and batch; earlier blocks untrained, which does
not change the work), takes eager warm-up steps, then profiles `--steps` eager steps with
torch.profiler. The CUDA graph replays exactly these kernels, but shows to the profiler as one
launch, so the eager step is what is profiled. Written to `--out` (JSON) and printed:
- the aten ops with the most device time (self time: the op's own kernels, not its callees'),
  per step and as a share of the step's kernel time;
- the kernels with the most device time.
On a CPU the same runs with CPU times (for trying the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facectx.config import parse_params, resolve_params_text  # noqa: E402
from facectx.steps.train import stage_trainer  # noqa: E402


def device_time(event, cuda: bool) -> float:
    """Self time on the device (CUDA) or the host (CPU) in microseconds, across torch versions."""
    if not cuda:
        return event.self_cpu_time_total
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--stage", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "step_profile.json"))
    args = parser.parse_args()
    params = parse_params(
        resolve_params_text(Path(args.params).read_text(), args.profile, where=args.params), args.params
    )
    cuda = torch.cuda.is_available()
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(
            params.train,
            max_train_rows=1024,
            cuda_graphs=False,
            device="cuda" if cuda else "cpu",
            earlier_blocks="finetune",
        ),
    )
    work = Path("/tmp/facectx-step-profile")
    trainer = stage_trainer(
        params, args.stage, Path(args.prepared), work, None, work / "resume", require_previous=False
    )
    rows = torch.arange(trainer.batch_size, device=trainer.device)
    with trainer.torch_scope():
        trainer._set_train_mode()
        for _ in range(args.warmup):
            trainer.train_step(rows)
        if cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as profiler:
            for _ in range(args.steps):
                trainer.train_step(rows)
            if cuda:
                torch.cuda.synchronize()
    events = profiler.key_averages()
    ops = [e for e in events if e.key.startswith("aten::") and device_time(e, cuda) > 0]
    # A kernel has no host time of its own. A record_function range (an optimizer's step) shows on
    # the device too, as the span of the kernels inside it, under the same name as its host range:
    # counting it as a kernel counts those kernels twice (visit 3's profile did: +6.1 ms a step).
    on_device = [e for e in events if cuda and device_time(e, cuda) > 0 and not e.key.startswith(("aten::", "cuda"))]
    kernels = [e for e in on_device if e.self_cpu_time_total == 0 and not e.key.startswith(("Memcpy", "Memset"))]
    ranges = [e for e in on_device if e.self_cpu_time_total > 0]
    step_total = sum(device_time(e, cuda) for e in (kernels if cuda else ops)) / args.steps

    def rows_of(selected):
        selected = sorted(selected, key=lambda e: device_time(e, cuda), reverse=True)[: args.top]
        return [
            {
                "name": e.key[:120],
                "ms_per_step": round(device_time(e, cuda) / args.steps / 1000, 3),
                "share": round(device_time(e, cuda) / args.steps / step_total, 4),
                "calls_per_step": e.count // args.steps,
            }
            for e in selected
        ]

    report = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "stage": args.stage,
        "batch_size": trainer.batch_size,
        "precision": params.train.precision,
        "device_ms_per_step": round(step_total / 1000, 3),
        "kernels_per_step": sum(e.count for e in kernels) // args.steps if cuda else None,
        "top_ops": rows_of(ops),
        "top_kernels": rows_of(kernels) if cuda else [],
        # Device span of each range (share: of the step's kernel time). Eager, so a span also
        # holds the gaps while the host launches the range's kernels one by one.
        "ranges": rows_of(ranges) if cuda else [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("top_ops", "top_kernels")}))
    for row in report["top_ops"][:15] + report["top_kernels"][:15] + report["ranges"]:
        print(f"{row['ms_per_step']:9.3f} ms {row['share']:7.1%} x{row['calls_per_step']:<5} {row['name']}")


if __name__ == "__main__":
    main()
