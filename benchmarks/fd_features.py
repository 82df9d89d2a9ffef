"""Which features make the non-standard Fréchet distance discriminate?

Real test photos against real validation photos must score far lower than any baseline's outputs
do. This compares faceres layers (spatially averaged activations, and the 1024-d identity
descriptor) on the prepared LFW data at several sample sizes, and prints a Markdown table.

    .venv/bin/python benchmarks/fd_features.py --photos 400      # after `dvc repro` (data/prepared)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from facectx.evaluation.baselines import BASELINES
from facectx.evaluation.evaluate import load_split, mean_training_frame, method_outputs
from facectx.evaluation.matcher import FACERES_DESCRIPTOR, FACERES_INPUT
from facectx.evaluation.metrics import frechet_distance
from facectx.evaluation.networks import FaceResNetworks

LAYERS = ("conv_pw_3_relu/clip_by_value", "conv_pw_5_relu/clip_by_value", "conv_pw_11_relu/clip_by_value")


@torch.no_grad()
def layer_features(nets: FaceResNetworks, images: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        maps = nets.matcher.graph(
            {FACERES_INPUT: nets._frames(images[start : start + batch])}, FACERES_DESCRIPTOR, also=LAYERS
        )
        for name, value in maps.items():
            parts.setdefault(name, []).append((value if value.dim() == 2 else value.mean(dim=(1, 2))).numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--photos", type=int, default=400, help="test photos (validation: all, up to this many)")
    parser.add_argument("--sizes", default="20,80", help="also these smaller sample sizes per side")
    args = parser.parse_args()

    test, val = load_split(args.prepared, "test", args.photos), load_split(args.prepared, "val", args.photos)
    baselines = {name: make(mean_training_frame(args.prepared)) for name, make in BASELINES.items()}
    outputs = method_outputs(baselines, test, 32)
    nets = FaceResNetworks()
    real_test, real_val = layer_features(nets, test.target), layer_features(nets, val.target)
    produced = {name: layer_features(nets, images) for name, images in outputs.items()}

    print(f"{len(test.target)} test photos, {len(val.target)} validation photos ({args.prepared})\n")
    print("| features | photos a side | real vs real | " + " | ".join(produced) + " |")
    print("|---|---|---|" + "---|" * len(produced))
    sizes = [int(s) for s in args.sizes.split(",") if s] + [len(test.target)]
    for name in (*LAYERS, FACERES_DESCRIPTOR):
        for n in sizes:
            real = frechet_distance(real_val[name][:n], real_test[name][:n])
            cells = [f"{frechet_distance(feats[name][:n], real_test[name][:n]):.2f}" for feats in produced.values()]
            kind = "identity descriptor" if name == FACERES_DESCRIPTOR else f"{name.split('_relu')[0]} mean"
            label = f"{kind} ({real_test[name].shape[1]}-d)"
            print(f"| {label} | {min(n, len(val.target))}/{n} | {real:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
