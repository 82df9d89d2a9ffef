"""facectx command line: one thin command per pipeline step (DVC and Kubeflow call the same)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from facectx.cli import airgap, data, evaluation, pipeline, serving, training
from facectx.config import DEFAULT_PARAMS_FILE, load_params
from facectx.progress import terminal_style

# Each group's add_parser registers its commands, each with its options and its handler
# `func(args, params)`; `needs_params=False` marks a command that reads no params file.
COMMAND_GROUPS = (data, training, evaluation, airgap, pipeline, serving)

# Libraries whose INFO lines say nothing a facectx user acts on.
QUIET_LOGGERS = ("great_expectations", "botocore", "urllib3", "numba")
# MLflow's own chatter: system-metrics start/stop, creating its tables, alembic's migration
# steps. Children of "mlflow" are set, not "mlflow" itself: importing mlflow resets its own level.
MLFLOW_CHATTER = ("mlflow.system_metrics", "mlflow.store.db.utils", "alembic", "alembic.runtime.migration")


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
    configure_logging(args.verbose)
    # Decided once, here: a person at a terminal gets bars, CI and Kubeflow logs get periodic lines.
    args.progress = terminal_style(sys.stderr.isatty())
    try:
        params = load_params(args.params, args.variant) if getattr(args, "needs_params", True) else None
        args.func(args, params)
    except Exception as err:  # a clear one-line error for known failures; traceback with -v
        if args.verbose:
            raise
        print(f"facectx {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def configure_logging(verbose: bool) -> None:
    """The one logging set-up: INFO (DEBUG with -v) from facectx, WARNING from the chatty libraries;
    with -v MLflow's chatter shows too."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("facectx").setLevel(level)  # also where a host set up the root logger first
    for noisy in QUIET_LOGGERS + (() if verbose else MLFLOW_CHATTER):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # MLflow prints "View run ... at" / "View experiment at" to stdout, not through logging;
        # this is its own switch for that (a user who sets it keeps theirs).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


if __name__ == "__main__":
    sys.exit(main())
