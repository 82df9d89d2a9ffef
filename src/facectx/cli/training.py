"""facectx train-stage, train: one stage of a model, or all of them in order.

Each handler imports its step module itself: a step loads torch, great-expectations or MLflow
(seconds each), which `facectx --help` and the other commands do not need."""

from __future__ import annotations

from facectx.cli.options import training_folders
from facectx.layout import CASCADE, PROJECT


def add_parser(commands) -> None:
    step = commands.add_parser(
        "train-stage",
        parents=[training_folders()],
        help="train one stage of train.stages from the previous one's checkpoint "
        "(under torchrun: with DDP, one process per GPU)",
    )
    step.add_argument("--stage", type=int, required=True, help="the stage's resolution, one of params' train.stages")
    step.set_defaults(func=train_stage)

    step = commands.add_parser(
        "train",
        parents=[training_folders()],
        help="train every stage of train.stages in order, each from the previous one's checkpoint",
    )
    step.add_argument("--metrics-file", help="write each stage's validation metrics here (JSON; what DVC tracks)")
    step.add_argument(
        "--cap-minutes",
        type=float,
        help="wall-clock budget for all stages; a stage past its share stops "
        "cleanly, keeps its checkpoint and is marked capped",
    )
    step.add_argument(
        "--pipeline-run",
        help="the MLflow pipeline run to track under (its key); default: one per model, settings and data",
    )
    step.set_defaults(func=train)


def _run_name(args) -> str:
    return args.run_name or args.variant or CASCADE


def _model_dirs(args) -> tuple[str, str]:
    """This model's folder and resume folder: the cascade's, or the variant's beside it."""
    name = args.variant or CASCADE
    return args.models_dir or str(PROJECT.model_dir(name)), args.resume_dir or str(PROJECT.resume_root(name))


def train_stage(args, params):
    from facectx.steps.train import stage_dirs, train_stage_step

    models_dir, resume_root = _model_dirs(args)
    dirs = stage_dirs(params, args.stage, models_dir, resume_root)
    return train_stage_step(
        params,
        args.stage,
        args.prepared_dir,
        run_name=_run_name(args),
        resume_uri=args.resume_uri,
        progress_style=args.progress,
        **dirs,
    )


def train(args, params):
    from facectx.steps.train import train_stages_step, write_stage_metrics

    cap = args.cap_minutes * 60 if args.cap_minutes else None
    models_dir, resume_root = _model_dirs(args)
    results = train_stages_step(
        params,
        args.prepared_dir,
        models_dir,
        _run_name(args),
        cap_seconds=cap,
        resume_root=resume_root,
        resume_uri=args.resume_uri,
        pipeline_run=args.pipeline_run,
        progress_style=args.progress,
    )
    if args.metrics_file:
        write_stage_metrics(results, args.metrics_file)
    return results
