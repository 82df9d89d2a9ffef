"""Which view of the frame should the identity and perceptual losses see?

    python benchmarks/identity_view.py [--prepared data/prepared] [--photos 800]

For dlib's face-recognition ResNet (the L_id network) on real test photos, per view: how well
the embedding still tells people apart (mean 1 - cosine for different-person pairs over
same-person pairs, and the ROC AUC), and what share of the hallucinated pixels (outside the face
mask, inside the photo) the view contains. Views: dlib's aligned chip at several paddings (0.25
is dlib's own face chip) and the whole frame resized to the network's 150 px input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

from facectx.data.shards import SplitShards  # noqa: E402
from facectx.models.identity import CHIP_SIZE, chip_affine, extract_chips, load_identity_network  # noqa: E402


def pairs(identities: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All same-person pairs, and as many random different-person pairs."""
    same = []
    for ident in np.unique(identities):
        idx = np.flatnonzero(identities == ident)
        same += [(i, j) for k, i in enumerate(idx) for j in idx[k + 1 :]]
    rng = np.random.default_rng(seed)
    diff = []
    while len(diff) < len(same):
        i, j = rng.integers(len(identities), size=2)
        if identities[i] != identities[j]:
            diff.append((i, j))
    return np.array(same), np.array(diff)


def auc(same_distance: np.ndarray, diff_distance: np.ndarray) -> float:
    """P(a different-person pair is farther apart than a same-person pair)."""
    return float(
        (diff_distance[:, None] > same_distance[None, :]).mean()
        + 0.5 * (diff_distance[:, None] == same_distance[None, :]).mean()
    )


def context_in_view(
    landmarks: torch.Tensor, mask: torch.Tensor, inside: torch.Tensor, padding: float, size: int
) -> float:
    """Share of the hallucinated pixels that fall inside the chip's footprint in the frame."""
    theta = chip_affine(landmarks, size, CHIP_SIZE, padding).double()  # chip [-1,1]^2 -> frame [-1,1]^2
    coords = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    frame = torch.stack([x, y], dim=-1).reshape(1, -1, 2) - theta[:, None, :, 2]
    chip = torch.linalg.solve(theta[:, None, :, :2], frame[..., None])[..., 0]
    seen = (chip.abs() <= 1).all(dim=-1).reshape(-1, size, size)
    context = (mask < 0.5) & inside
    return float((seen & context).sum() / context.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", default=str(REPO / "data/prepared"))
    parser.add_argument("--photos", type=int, default=800)
    parser.add_argument("--paddings", default="0.25,0.5,0.75,1.0")
    args = parser.parse_args()

    shards = SplitShards(args.prepared, "test")
    index = shards.index()
    # Photos of people with at least two, so that there are same-person pairs.
    counts = index.identity.map(index.identity.value_counts())
    rows = np.flatnonzero(counts.to_numpy() >= 2)[: args.photos]
    size = shards.frame_size
    frames = torch.from_numpy(shards.array("target", size)[rows].copy()).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(shards.array("mask", size)[rows].copy()).float() / 255
    inside = frames.sum(1) > 0  # exactly-black pixels are where the crop ran past the photo
    landmarks = torch.from_numpy(shards.array("landmarks")[rows].copy())
    same, diff = pairs(index.identity.to_numpy()[rows])
    net = load_identity_network()
    results = {}
    views = {f"chip padding {p}": float(p) for p in args.paddings.split(",")} | {"whole frame": None}
    for name, padding in views.items():
        with torch.no_grad():
            embeddings = []
            for start in range(0, len(rows), 64):
                batch = slice(start, start + 64)
                view = (
                    extract_chips(frames[batch], landmarks[batch], padding=padding)
                    if padding is not None
                    else F.interpolate(frames[batch], size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)
                )
                embeddings.append(F.normalize(net(view), dim=1))
            e = torch.cat(embeddings)
        d_same, d_diff = ((1 - (e[p[:, 0]] * e[p[:, 1]]).sum(1)).numpy() for p in (same, diff))
        coverage = context_in_view(landmarks, masks, inside, padding, size) if padding is not None else 1.0
        results[name] = {
            "same": round(float(d_same.mean()), 4),
            "different": round(float(d_diff.mean()), 4),
            "separation": round(float(d_diff.mean() / d_same.mean()), 2),
            "auc": round(auc(d_same, d_diff), 4),
            "context_in_view": round(coverage, 3),
        }
        print(name, results[name], flush=True)
    print(
        json.dumps(
            {"photos": len(rows), "same_pairs": len(same), "different_pairs": len(diff), "views": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
