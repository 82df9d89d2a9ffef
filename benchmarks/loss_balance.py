"""Each loss term's share of the generator's update, per stage, on a trained model.

    python benchmarks/loss_balance.py [--models models] [--prepared data/prepared] [--batches 8]
                                      [--target-share 0.1] [--set losses.identity_padding=0.25 ...]

For each stage with a checkpoint under --models (stage_N/checkpoint), the generator and critic
are loaded and, on --batches training batches, the trainer's own measurement is taken: the L2 norm
of each weighted term's gradient on the generator's trained parameters (`grad_<term>`), and its
share of the reconstruction term's (`share_<term>`). Also printed: the weight each term would need
for --target-share (the share scales linearly with the weight). `--set` overrides params (e.g.
the old face-chip view) to compare the shares before and after a change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

from facectx.checkpoint import load_checkpoint  # noqa: E402
from facectx.config import parse_params  # noqa: E402
from facectx.steps.train import stage_trainer  # noqa: E402


def with_overrides(params_text: str, overrides: list[str]) -> str:
    raw = yaml.safe_load(params_text)
    for item in overrides:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return yaml.safe_dump(raw)


def measure(params, stage: int, models: Path, prepared: Path, batches: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        trainer = stage_trainer(
            params, stage, prepared, Path(scratch) / "out", None, Path(scratch) / "resume", require_previous=False
        )
    _, states, _ = load_checkpoint(models / f"stage_{stage}" / "checkpoint")
    trainer.generator.load_state_dict(states["generator"])
    trainer.critic.load_state_dict(states["critic"])
    trainer.generator.train()
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(trainer.train_data.rows, generator=generator)
    norms: dict[str, list[float]] = {}
    for b in range(batches):
        batch = trainer.train_data.batch(rows[b * trainer.batch_size : (b + 1) * trainer.batch_size])
        fake = trainer.generator(batch.masked, batch.mask)[stage]
        gen = trainer.loss.generator_loss(batch.masked[stage], batch.target[stage], fake, batch.landmarks)
        for name, value in trainer._term_gradient_norms(gen.weighted).items():
            norms.setdefault(name, []).append(float(value))
    mean = {k: float(np.mean(v)) for k, v in norms.items()}
    return {
        "weights": trainer.weights,
        "grad": mean,
        "share": {k: v / mean["rec"] for k, v in mean.items() if k != "rec"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--models", default=str(REPO / "models"))
    parser.add_argument("--prepared", default=str(REPO / "data/prepared"))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--target-share", type=float, default=0.10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override (repeatable)")
    args = parser.parse_args()

    params = parse_params(with_overrides(Path(args.params).read_text(), args.set), args.params)
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, device="cpu", max_train_rows=max(params.train.max_train_rows, 64)),
    )
    models, report = Path(args.models), {}
    for stage in params.train.stages:
        if not (models / f"stage_{stage}" / "checkpoint" / "meta.json").is_file():
            continue
        result = measure(params, stage, models, Path(args.prepared), args.batches)
        # share is linear in the weight: the weight that would give the target share.
        result["weight_for_target"] = {
            k: result["weights"][k] * args.target_share / s for k, s in result["share"].items() if s > 0
        }
        report[stage] = result
        print(
            f"stage {stage}: "
            + ", ".join(
                f"{k} {100 * s:.1f}% (weight {result['weights'][k]:g}; "
                f"{result['weight_for_target'].get(k, float('nan')):.3g} for {100 * args.target_share:g}%)"
                for k, s in result["share"].items()
            ),
            flush=True,
        )
    print(
        json.dumps({"overrides": args.set, "target_share": args.target_share, "stages": report}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
