"""Which models fit a GPU visit uncapped? (used by benchmarks/gpu_visit.sh main ... auto)

Reads the trainer's time for each stage's schedule (train_throughput.py's fast variant,
stage_seconds), estimates the cascade's training time, and prints the models to train:
"cascade,progan" when the two, sharing the GPU (about twice one's time), fit in the seconds
left beside the evaluation, else "cascade". The estimate and its parts go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGE_OVERHEAD_S = 8  # per stage: building the trainer, validation, the checkpoint
DATA_REBUILD_S = 25
SECOND_EVAL_S = 70  # the second model's share of the whole-test-split evaluation
SHARING = 2.2  # two models on one GPU: a bit over twice one's time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", required=True)
    parser.add_argument("--seconds-left", type=float, required=True)
    parser.add_argument("--eval-reserve", type=float, required=True)
    args = parser.parse_args()
    stages = json.loads(Path(args.throughput).read_text())["stages"]
    one = sum(stage["fast"]["stage_seconds"] + STAGE_OVERHEAD_S for stage in stages)
    room = args.seconds_left - DATA_REBUILD_S - args.eval_reserve - SECOND_EVAL_S
    both = SHARING * one <= room
    print(
        f"estimate: the cascade alone {one:.0f} s; two models {SHARING * one:.0f} s; room {room:.0f} s", file=sys.stderr
    )
    print("cascade,progan" if both else "cascade")


if __name__ == "__main__":
    main()
