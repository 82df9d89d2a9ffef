"""Does the CUDA-graph step train like the eager one? (train.cuda_graphs; needs a CUDA device)

    python benchmarks/cuda_graph_check.py --prepared data/prepared --params params.yaml --profile paper

For each model kind (the cascade; ProGAN, whose fade-in changes the step's structure half-way),
two trainers start from the same seed and weights, one replaying the recorded graph and one
eager, and take the same steps on the same rows. Reported per step: each loss from both, and at
the end the largest relative difference of the generator's weights. They cannot be bit-equal:
bf16 autocast and the atomic adds of some backward kernels (grid_sample, index) round in the
order the GPU happens to run them, so the eager trainer run twice is the reference spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from facectx.config import parse_params  # noqa: E402
from facectx.training.loop import StageTrainer  # noqa: E402


def trained(params, stage: int, prepared: Path, graphs: bool, steps: int, work: Path, device: str):
    variant = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, cuda_graphs=graphs, device=device, grad_norm_every_steps=0),
    )
    trainer = StageTrainer(variant, stage, prepared, work, None, work / "resume", require_previous=False)
    generator = torch.Generator().manual_seed(1)
    losses = []
    with trainer.torch_scope():
        trainer._set_train_mode()
        for step in range(steps):
            rows = torch.randperm(trainer.train_data.rows, generator=generator)[: trainer.batch_size].to(trainer.device)
            trainer.step = step
            parts = trainer.train_step(rows)
            losses.append({k: round(float(v), 5) for k, v in parts.items()})
    weights = {
        k: v.detach().float().clone() for k, v in trainer.generator.state_dict().items() if v.is_floating_point()
    }
    graphed = trainer.graphed is not None and trainer.graphed.graph is not None
    return losses, weights, graphed, trainer.graph_failure


def largest_relative_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).norm() / (b[k].norm() + 1e-12)) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--stage", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", default="cuda", help="cpu only tries the script: no graph there")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "cuda_graph_check.json"))
    args = parser.parse_args()
    raw = yaml.safe_load(Path(args.params).read_text())
    raw["profile"] = args.profile
    base = parse_params(yaml.safe_dump(raw), args.params)
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, max_train_rows=1024))
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "stage": args.stage,
        "models": {},
    }
    for kind in ("cascade", "progan"):
        params = dataclasses.replace(base, model=dataclasses.replace(base.model, kind=kind))
        # ProGAN fades in over fade_in_fraction of the stage's steps: make that half of these steps,
        # so that both of its structures are recorded and replayed.
        t = params.train
        total_steps = t.epochs[list(t.stages).index(args.stage)] * (t.max_train_rows // t.batch_size[0])
        params = dataclasses.replace(
            params, train=dataclasses.replace(t, fade_in_fraction=args.steps / 2 / total_steps)
        )
        work = Path(f"/tmp/facectx-graph-check/{kind}")
        runs = {
            name: trained(params, args.stage, Path(args.prepared), graphs, args.steps, work / name, args.device)
            for name, graphs in (("graphs", True), ("eager", False), ("eager_again", False))
        }
        report["models"][kind] = {
            "graph_replayed": runs["graphs"][2],
            "graph_failure": runs["graphs"][3],
            "losses_graphs": runs["graphs"][0],
            "losses_eager": runs["eager"][0],
            "weights_rel_diff_graphs_vs_eager": largest_relative_difference(runs["graphs"][1], runs["eager"][1]),
            "weights_rel_diff_eager_vs_eager": largest_relative_difference(runs["eager_again"][1], runs["eager"][1]),
        }
        print(json.dumps({kind: {k: v for k, v in report["models"][kind].items() if "losses" not in k}}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
