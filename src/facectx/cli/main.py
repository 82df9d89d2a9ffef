"""facectx command line: one thin command per pipeline step (DVC and Kubeflow call the same)."""

from __future__ import annotations

import argparse
import logging
import sys

from facectx.cli import airgap, data, evaluation, pipeline, serving, training
from facectx.config import DEFAULT_PARAMS_FILE, load_params

# Each group's add_parser registers its commands, each with its options and its handler
# `func(args, params)`; `needs_params=False` marks a command that reads no params file.
COMMAND_GROUPS = (data, training, evaluation, airgap, pipeline, serving)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facectx", description=__doc__)
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument(
        "--variant", help="apply params' variants.NAME (the ProGAN variant, an ablation) on top of the profile"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("great_expectations", "botocore", "urllib3", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        params = load_params(args.params, args.variant) if getattr(args, "needs_params", True) else None
        args.func(args, params)
    except Exception as err:  # a clear one-line error for known failures; traceback with -v
        if args.verbose:
            raise
        print(f"facectx {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
