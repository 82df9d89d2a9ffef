"""facectx command line: one thin command per pipeline step (DVC and Kubeflow call the same)."""
from __future__ import annotations

import argparse
import logging
import sys

from facectx import steps
from facectx.config import DEFAULT_PARAMS_FILE, load_params

log = logging.getLogger("facectx")

RAW_DIR = "data/raw"
VALIDATED_DIR = "data/validated"
PREPARED_DIR = "data/prepared"
MODELS_DIR = "models"


def _ingest(args, params):
    return steps.ingest_step(params, args.raw_dir, args.source)


def _validate(args, params):
    return steps.validate_step(params, args.raw_dir, args.out_dir)


def _prepare(args, params):
    return steps.prepare_step(params, args.raw_dir, args.validated_dir, args.out_dir)


def _train_stage(args, params):
    dirs = steps.stage_dirs(params, args.stage, args.models_dir)
    return steps.train_stage_step(params, args.stage, args.prepared_dir, run_name=args.run_name, **dirs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facectx", description=__doc__)
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    steps = parser.add_subparsers(dest="command", required=True)

    step = steps.add_parser("ingest", help="copy photos from ingest.source into the raw area + manifest")
    step.add_argument("--source", help="override ingest.source (folder or s3://bucket/prefix)")
    step.add_argument("--raw-dir", default=RAW_DIR)
    step.set_defaults(run=_ingest)

    step = steps.add_parser("validate", help="great-expectations suite + per-photo checks; quarantine the bad")
    step.add_argument("--raw-dir", default=RAW_DIR)
    step.add_argument("--out-dir", default=VALIDATED_DIR)
    step.set_defaults(run=_validate)

    step = steps.add_parser("prepare", help="crops, masks, pyramid, splits, shards, preview")
    step.add_argument("--raw-dir", default=RAW_DIR)
    step.add_argument("--validated-dir", default=VALIDATED_DIR)
    step.add_argument("--out-dir", default=PREPARED_DIR)
    step.set_defaults(run=_prepare)

    step = steps.add_parser("train-stage", help="train block N from block N/2's checkpoint")
    step.add_argument("--stage", type=int, required=True, help="resolution of the block: 8, 16, 32, 64 or 128")
    step.add_argument("--prepared-dir", default=PREPARED_DIR)
    step.add_argument("--models-dir", default=MODELS_DIR)
    step.add_argument("--run-name", default="cascade", help="names the MLflow pipeline run (e.g. an ablation)")
    step.set_defaults(run=_train_stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "botocore", "urllib3", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        params = load_params(args.params)
        args.run(args, params)
    except Exception as err:  # noqa: BLE001 - a clear one-line error for known failures; traceback with -v
        if args.verbose:
            raise
        print(f"facectx {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
