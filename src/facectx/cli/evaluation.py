"""facectx evaluate, register, promote: score the models, register the cascade, gate its promotion.

Each handler imports its step module itself: a step loads torch, great-expectations or MLflow
(seconds each), which `facectx --help` and the other commands do not need."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from facectx.cli.options import folders, last_checkpoint
from facectx.config import parse_weights_choices
from facectx.layout import EVAL_DIR, PROJECT, evaluated_models


def add_parser(commands) -> None:
    _add_evaluate(commands)
    _add_register(commands)
    step = commands.add_parser("promote", help="challenger -> champion if it wins on every registry.gate_metrics entry")
    step.add_argument(
        "--force", action="store_true", help="skip the gate (logged as forced), e.g. after the evaluation changed"
    )
    step.set_defaults(func=promote)


def _add_evaluate(commands) -> None:
    step = commands.add_parser(
        "evaluate",
        parents=folders("--prepared-dir", "--raw-dir", "--models-dir"),
        help="score models and baselines on the test split; report",
    )
    step.add_argument(
        "--variants-dir", default=str(PROJECT.variants), help="the compared models' folders (default: %(default)s)"
    )
    step.add_argument(
        "--model",
        action="append",
        metavar="NAME=CHECKPOINT_DIR",
        help="a model to score (repeatable); default: the cascade's last stage and the variants params' compare names",
    )
    step.add_argument(
        "--weights",
        metavar="CHOICE[,CHOICE...]",
        help="score each trained model with these of its weights, one row each (running, standing, ema, auto; "
        "e.g. running,standing,ema); the first is the model's own row; default: params' evaluate.weights",
    )
    step.add_argument("--baselines-only", action="store_true")
    step.add_argument("--out-dir", default=EVAL_DIR)
    step.set_defaults(func=evaluate)


def evaluate(args, params):
    from facectx.steps.evaluate import evaluate_step

    if args.weights:
        weights = parse_weights_choices(args.weights, "--weights")
        params = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, weights=weights))
    models = dict(item.split("=", 1) for item in args.model) if args.model else {}
    if not models and not args.baselines_only:
        models = _compared_models(args, params)
    return evaluate_step(params, args.prepared_dir, args.raw_dir, models, args.out_dir, progress_style=args.progress)


def _compared_models(args, params) -> dict[str, str]:
    """The cascade and every variant params' `compare` names (trained by DVC's train_variant@NAME)."""
    layout = dataclasses.replace(PROJECT, cascade=Path(args.models_dir), variants=Path(args.variants_dir))
    models = layout.final_checkpoints(evaluated_models(params.compare), params.train.stages)
    for name in params.compare:
        if not Path(models[name]).is_dir():
            raise FileNotFoundError(
                f"variant {name!r} (params compare) has no checkpoint at {models[name]}: train it with "
                f"`facectx --variant {name} train`"
            )
    return models


def _add_register(commands) -> None:
    step = commands.add_parser(
        "register",
        parents=folders("--models-dir", "--prepared-dir", "--raw-dir"),
        help="log the checkpoint as an MLflow pyfunc model; register it as challenger",
    )
    step.add_argument("--checkpoint", help="checkpoint folder (default: the last stage's, under --models-dir)")
    step.add_argument(
        "--metrics", default=f"{EVAL_DIR}/metrics.json", help="evaluation metrics; the gate uses methods.cascade"
    )
    step.add_argument("--example-photo", help="input example photo (default: the first test-split photo)")
    step.set_defaults(func=register)


def register(args, params):
    from facectx.steps.register import register_step

    result = register_step(
        params,
        args.checkpoint or last_checkpoint(args, params),
        args.metrics,
        example_photo=args.example_photo,
        prepared_dir=args.prepared_dir,
        raw_dir=args.raw_dir,
    )
    print(f"registered {result['model_name']} version {result['version']} as challenger ({result['model_uri']})")
    return result


def promote(args, params):
    from facectx.steps.register import promote_step

    decision = promote_step(params, force=args.force)
    print(
        f"{params.registry.model_name}: {'promoted' if decision['promoted'] else 'not promoted'} "
        f"version {decision['challenger']['version']}: {decision['reason']}"
    )
    return decision
