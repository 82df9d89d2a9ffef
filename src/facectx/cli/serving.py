"""facectx serve, hallucinate: a registered model over HTTP, or one photo through a checkpoint.

facectx.serving, facectx.registry and the hallucinate step are imported by the handlers: they load
pandas, torch and MLflow, which the other commands' start does not need."""

from __future__ import annotations

from facectx.cli.options import folders, last_checkpoint
from facectx.config import WEIGHT_CHOICES, load_params


def add_parser(commands) -> None:
    step = commands.add_parser(
        "serve", help="serve a registered model over HTTP (MLflow's scoring server), from any shell"
    )
    step.add_argument(
        "--model-uri",
        help="default: models:/NAME@champion, NAME being params' registry.model_name (the --params file's)",
    )
    step.add_argument("-p", "--port", type=int, default=5001, help="default: %(default)s")
    step.add_argument("--host", default="127.0.0.1", help="default: %(default)s (0.0.0.0 to listen on every interface)")
    step.add_argument("-w", "--workers", type=int, default=1, help="server processes (default: %(default)s)")
    step.set_defaults(func=serve, needs_params=False)  # params only for the default --model-uri

    step = commands.add_parser(
        "hallucinate", parents=folders("--models-dir"), help="hallucinate the context of the face in one photo"
    )
    step.add_argument("photo", help="a JPEG or PNG photo with a face")
    step.add_argument("-o", "--out", required=True, help="output PNG")
    step.add_argument("--checkpoint", help="checkpoint folder (default: the last stage's, under --models-dir)")
    step.add_argument(
        "--weights",
        choices=WEIGHT_CHOICES,
        help="the checkpoint's weights: running (running batch-norm statistics), standing (re-estimated "
        "after training), ema (moving average), auto (ema, else standing, else running); "
        "default: params' evaluate.weights[0]",
    )
    step.set_defaults(func=hallucinate)

    step = commands.add_parser(
        "hallucinate-dataset",
        help="hallucinate the context of every photo of a dataset (folder or s3:// prefix), in resumable shards",
    )
    step.add_argument(
        "source",
        nargs="?",
        help="folder or s3://bucket/prefix laid out <identity>/<photo> (default: params hallucinate.source)",
    )
    step.add_argument(
        "out",
        nargs="?",
        help="folder or s3://bucket/prefix for frames, manifest, quarantine (default: hallucinate.out)",
    )
    step.add_argument(
        "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or a checkpoint folder (default: hallucinate.model)"
    )
    step.add_argument("--model-cache", help="folder for registry model downloads (default: hallucinate.model_cache)")
    step.add_argument("--no-track", action="store_true", help="record no MLflow run")
    step.set_defaults(func=hallucinate_dataset)


def serve(args, params):
    from facectx.registry import CHAMPION
    from facectx.serving import serve

    model_uri = args.model_uri
    if model_uri is None:
        model_uri = f"models:/{load_params(args.params, args.variant).registry.model_name}@{CHAMPION}"
    serve(model_uri, args.port, args.host, args.workers)


def hallucinate(args, params):
    from facectx.steps.hallucinate import hallucinate_step

    checkpoint = args.checkpoint or last_checkpoint(args, params)
    result = hallucinate_step(params, args.photo, args.out, checkpoint, args.weights)
    print(f"wrote {result['out']} ({result['weights']} weights)")
    return result


def hallucinate_dataset(args, params):
    from facectx.steps.hallucinate_dataset import hallucinate_dataset_step

    report = hallucinate_dataset_step(
        params,
        args.source,
        args.out,
        args.model,
        track=not args.no_track,
        cache_dir=args.model_cache,
        progress_style=args.progress,
    )
    print(
        f"{report['photos_found']} photos found: {report['written']} written, {report['quarantined']} quarantined "
        f"({report['photos_per_second']} photos/s this run, {report['shards_done_before']} shards already done)"
    )
    return report
