"""Does the CUDA-graph step train like the eager one? (train.cuda_graphs; needs a CUDA device)

    python benchmarks/cuda_graph_check.py --prepared data/prepared --params params.yaml --profile paper [--precision fp32]

For each model kind (the cascade; ProGAN, whose fade-in changes the step's structure half-way),
trainers start from the same seed and weights and take the same steps on the same rows: one
replaying the recorded graph, and the eager step `--eager-runs` times. They cannot be bit-equal:
bf16 autocast and the atomic adds of some backward kernels (grid_sample, index) round in the
order the GPU happens to run them, so the eager runs among themselves are the reference spread.

Reported per model: each step's losses (graph and first eager run) and, for the generator's
weights after the last step, how far two runs ended apart as a share of how far training moved
them (||w_a - w_b|| / ||w_b - w_initial||, all weights together), graph vs each eager run and
eager run vs eager run. (An earlier version reported the largest per-tensor relative difference,
which a near-zero tensor such as a fresh bias dominates.)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facectx.config import parse_params, resolve_params_text  # noqa: E402
from facectx.steps.train import stage_trainer  # noqa: E402
from facectx.training.loop import StageTrainer  # noqa: E402


def flat_weights(trainer: StageTrainer) -> torch.Tensor:
    return torch.cat(
        [v.detach().float().flatten() for v in trainer.generator.state_dict().values() if v.is_floating_point()]
    )


def trained(params, stage: int, prepared: Path, graphs: bool, steps: int, work: Path, device: str) -> dict:
    variant = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, cuda_graphs=graphs, device=device, grad_norm_every_steps=0),
    )
    trainer = stage_trainer(variant, stage, prepared, work, None, work / "resume", require_previous=False)
    initial = flat_weights(trainer)
    rows_generator = torch.Generator().manual_seed(1)
    losses = []
    with trainer.torch_scope():
        trainer._set_train_mode()
        for step in range(steps):
            rows = torch.randperm(trainer.train_data.rows, generator=rows_generator)[: trainer.batch_size]
            trainer.step = step
            parts = trainer.train_step(rows.to(trainer.device))
            losses.append({k: round(float(v), 5) for k, v in parts.items()})
    return {
        "losses": losses,
        "initial": initial,
        "final": flat_weights(trainer),
        "graph_replayed": trainer.graphed is not None and trainer.graphed.graph is not None,
        "graph_failure": trainer.graph_failure,
    }


def apart(a: dict, b: dict) -> float:
    """How far two runs ended apart, as a share of how far training moved b's weights."""
    return round(float((a["final"] - b["final"]).norm() / (b["final"] - b["initial"]).norm()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--stage", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eager-runs", type=int, default=2)
    parser.add_argument("--precision", default=None, choices=("bf16", "fp32"), help="default: the profile's")
    parser.add_argument("--device", default="cuda", help="cpu only tries the script: no graph there")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "cuda_graph_check.json"))
    args = parser.parse_args()
    base = parse_params(
        resolve_params_text(Path(args.params).read_text(), args.profile, where=args.params), args.params
    )
    base = dataclasses.replace(
        base,
        train=dataclasses.replace(base.train, max_train_rows=1024, precision=args.precision or base.train.precision),
    )
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "stage": args.stage,
        "steps": args.steps,
        "precision": base.train.precision,
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
        graph_run = trained(params, args.stage, Path(args.prepared), True, args.steps, work / "graphs", args.device)
        eager_runs = [
            trained(params, args.stage, Path(args.prepared), False, args.steps, work / f"eager_{i}", args.device)
            for i in range(args.eager_runs)
        ]
        report["models"][kind] = {
            "graph_replayed": graph_run["graph_replayed"],
            "graph_failure": graph_run["graph_failure"],
            "apart_graph_vs_eager": [apart(graph_run, eager) for eager in eager_runs],
            "apart_eager_vs_eager": [apart(a, b) for a, b in itertools.combinations(eager_runs, 2)],
            "losses_graph": graph_run["losses"],
            "losses_eager": eager_runs[0]["losses"],
        }
        print(json.dumps({kind: {k: v for k, v in report["models"][kind].items() if "losses" not in k}}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
