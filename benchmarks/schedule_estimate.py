"""Which models fit a GPU visit uncapped? (used by benchmarks/gpu_visit.sh main ... auto)

Reads the trainer's images/s per stage (train_throughput.py --variants fast) and the paper
profile's schedule, estimates the cascade's training time, and prints the models to train:
"cascade,progan" when the two, sharing the GPU (about twice one's time), fit in the seconds
left beside the evaluation, else "cascade". The estimate and its parts go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facectx.config import load_params  # noqa: E402

STAGE_OVERHEAD_S = 8  # per stage: building the trainer, validation, the checkpoint
DATA_REBUILD_S = 25
SECOND_EVAL_S = 70  # the second model's share of the whole-test-split evaluation
SHARING = 2.2  # two models on one GPU: a bit over twice one's time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--throughput", required=True)
    parser.add_argument("--seconds-left", type=float, required=True)
    parser.add_argument("--eval-reserve", type=float, required=True)
    args = parser.parse_args()
    train = load_params(args.params).train
    rows = len(pd.read_parquet(Path(args.prepared) / "train" / "index.parquet", columns=["identity"]))
    rates = {s["stage"]: s["fast"]["images_per_s"] for s in json.loads(Path(args.throughput).read_text())["stages"]}
    one = sum(
        epochs * (rows // batch) * batch / rates[stage] + STAGE_OVERHEAD_S
        for stage, epochs, batch in zip(train.stages, train.epochs, train.batch_size)
    )
    room = args.seconds_left - DATA_REBUILD_S - args.eval_reserve - SECOND_EVAL_S
    both = SHARING * one <= room
    print(
        f"estimate: the cascade alone {one:.0f} s; two models {SHARING * one:.0f} s; room {room:.0f} s", file=sys.stderr
    )
    print("cascade,progan" if both else "cascade")


if __name__ == "__main__":
    main()
