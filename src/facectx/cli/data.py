"""facectx ingest, validate, prepare: the data steps.

Each handler imports its step module itself: a step loads torch, great-expectations or MLflow
(seconds each), which `facectx --help` and the other commands do not need."""

from __future__ import annotations

from facectx.cli.options import folders
from facectx.layout import PREPARED_DIR, VALIDATED_DIR


def add_parser(commands) -> None:
    step = commands.add_parser(
        "ingest", parents=folders("--raw-dir"), help="copy photos from ingest.source into the raw area + manifest"
    )
    step.add_argument("--source", help="override ingest.source (folder or s3://bucket/prefix)")
    step.set_defaults(func=ingest)

    step = commands.add_parser(
        "validate", parents=folders("--raw-dir"), help="great-expectations suite + per-photo checks; quarantine the bad"
    )
    step.add_argument("--out-dir", default=VALIDATED_DIR)
    step.set_defaults(func=validate)

    step = commands.add_parser(
        "prepare",
        parents=folders("--raw-dir", "--validated-dir"),
        help="crops, masks, pyramid, splits, shards, preview",
    )
    step.add_argument("--out-dir", default=PREPARED_DIR)
    step.set_defaults(func=prepare)


def ingest(args, params):
    from facectx.steps.ingest import ingest_step

    return ingest_step(params, args.raw_dir, args.source, args.progress)


def validate(args, params):
    from facectx.steps.validate import validate_step

    return validate_step(params, args.raw_dir, args.out_dir, args.progress)


def prepare(args, params):
    from facectx.steps.prepare import prepare_step

    return prepare_step(params, args.raw_dir, args.validated_dir, args.out_dir, args.progress)
