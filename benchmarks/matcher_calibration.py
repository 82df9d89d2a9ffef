"""Calibrate the independent evaluation matcher (faceres) on all of LFW's DevTrain pairs.

    .venv/bin/python benchmarks/matcher_calibration.py              # all 2,200 pairs, recomputed
    .venv/bin/python benchmarks/matcher_calibration.py --max-pairs 100 --cached

Prints ROC-AUC, TPR at FPR 0.01, the 1%-FPR cosine threshold and the time per face (dlib
landmarks per photo, faceres descriptor per face), and writes benchmarks/out/matcher_calibration.json.
The result also lands in the facectx cache, where lfw_pair_calibration() finds it next time.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from facectx.config import DEFAULT_PARAMS_FILE, load_params
from facectx.evaluation.lfw_calibration import lfw_pair_calibration
from facectx.evaluation.matcher import FaceResMatcher

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lfw",
        default=os.environ.get("FACECTX_LFW_DIR", "/work/shared/datasets/lfw"),
        help="LFW folder with images/ and pairsDevTrain.txt (default: $FACECTX_LFW_DIR)",
    )
    parser.add_argument("--max-pairs", type=int, default=None, help="first N pairs of each kind (default: all)")
    parser.add_argument("--far", type=float, default=0.01, help="false-accept rate the threshold is set for")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cached", action="store_true", help="reuse a cached result instead of recomputing")
    parser.add_argument("--params", default=str(REPO / DEFAULT_PARAMS_FILE), help="params file whose landmarks to use")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    began = time.perf_counter()
    matcher = FaceResMatcher(device=args.device)
    landmarks = load_params(args.params).landmarks
    result = lfw_pair_calibration(args.lfw, matcher, landmarks, args.max_pairs, far=args.far, use_cache=args.cached)
    result = {
        **result,
        "wall_s": time.perf_counter() - began,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.device}",
    }

    print(f"matcher      {result['matcher']}")
    print(
        f"pairs        {result['pairs']} scored ({result['pairs_same']} same, {result['pairs_diff']} different); "
        f"skipped: {result['skipped_no_face']} no face, {result['skipped_missing_photo']} photo missing"
    )
    print(f"ROC-AUC      {result['auc']:.4f}")
    print(f"TPR@FPR{args.far:g}  {result['tpr_at_far']:.4f}  (measured FPR {result['far_measured']:.4f})")
    print(f"threshold    {result['threshold']:.4f}  (cosine; same person when score >= threshold)")
    print(f"mean cosine  same {result['mean_score_same']:.3f}, different {result['mean_score_diff']:.3f}")
    print(
        f"time         {result['landmark_ms_per_photo']:.1f} ms/photo landmarks (dlib), "
        f"{result['embed_ms_per_face']:.1f} ms/face faceres (align + network), {result['faces']} faces, "
        f"{result['wall_s']:.0f} s wall, {result['torch_threads']} torch threads"
    )
    out = REPO / "benchmarks" / "out" / "matcher_calibration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
