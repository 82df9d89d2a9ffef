"""The params file for a multi-node stage (pytorchjob-stage.yaml): params.yaml with a profile that
keeps each GPU's batch and scales the learning rate to the larger global batch.

train.batch_size is the *global* batch of one step, split evenly over every GPU of the job. The
paper profile's 64 on one GPU becomes 4 rows a GPU on 2 nodes x 8 GPUs: sixteen H100s idling on
launch overhead, with batch statistics from 4 rows. So the batch is scaled instead: each GPU
keeps --rows-per-gpu rows (64 = the one-GPU schedule's), the global batch becomes
rows x nodes x GPUs (1024), and Adam's learning rate grows by the square root of the batch's
growth (the square-root rule for adaptive optimisers, Malladi et al., NeurIPS 2022: x4 for x16),
never linearly, which destabilises GAN training. Epochs are kept, so a stage takes 1/16 of the
optimiser steps; raise train.epochs in the profile if the stage's validation losses need more.

    python3 infra/examples/multinode_params.py params.yaml --profile paper \\
        --nodes 2 --gpus-per-node 8 --rows-per-gpu 64 > params-2x8.yaml
    kubectl -n <profile> create configmap facectx-params --from-file=params.yaml=params-2x8.yaml

The result is checked with facectx's own params loader before it is written.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

PROFILE = "multinode"


def multinode_params(raw: dict, profile: str, gpus: int, rows_per_gpu: int) -> dict:
    """`raw` with profile PROFILE = `profile`'s overrides plus the scaled batch and learning rate."""
    from facectx.config import parse_params

    base = parse_params(yaml.safe_dump({**raw, "profile": profile}), f"profile {profile}")
    global_batch = rows_per_gpu * gpus
    overrides = dict(raw["profiles"][profile] or {})
    train = dict(overrides.get("train") or {})
    train["batch_size"] = [global_batch] * len(base.train.stages)
    # Each stage scales from its own one-GPU batch; one learning rate serves them all, so they must agree.
    growth = {global_batch / batch for batch in base.train.batch_size}
    if len(growth) != 1:
        raise ValueError(f"profile {profile}: stages have different batch sizes {base.train.batch_size}")
    train["lr"] = base.train.lr * math.sqrt(growth.pop())
    overrides["train"] = train
    result = {**raw, "profile": PROFILE, "profiles": {**raw["profiles"], PROFILE: overrides}}
    parse_params(yaml.safe_dump(result), "the multi-node params")  # facectx's own checks
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", type=Path, help="the project's params.yaml")
    parser.add_argument("--profile", default="paper", help="the profile to scale (default: %(default)s)")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, required=True)
    parser.add_argument("--rows-per-gpu", type=int, default=64, help="each GPU's rows a step (default: %(default)s)")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.params.read_text())
    if args.profile not in (raw.get("profiles") or {}):
        parser.error(f"{args.params}: no profile {args.profile!r} (profiles: {sorted(raw.get('profiles') or {})})")
    result = multinode_params(raw, args.profile, args.nodes * args.gpus_per_node, args.rows_per_gpu)
    sys.stdout.write(
        f"# {args.params} for {args.nodes} nodes x {args.gpus_per_node} GPUs: written by {Path(__file__).name}\n"
    )
    sys.stdout.write(yaml.safe_dump(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
