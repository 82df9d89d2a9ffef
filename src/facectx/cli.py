"""facectx command line: one thin command per pipeline step (DVC and Kubeflow call the same)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facectx import steps
from facectx.airgap.format import DEFAULT_MAX_MIB
from facectx.config import DEFAULT_PARAMS_FILE, load_params

log = logging.getLogger("facectx")

RAW_DIR = "data/raw"
VALIDATED_DIR = "data/validated"
PREPARED_DIR = "data/prepared"
MODELS_DIR = "models/cascade"  # the cascade's stages: stage_N/{checkpoint, metrics.json, losses.csv}
VARIANTS_DIR = "models/variants"  # one folder like it per compared model
RESUME_DIR = "models/resume"  # resume state per model (outside DVC's outputs, which a re-run deletes)
METRICS_DIR = "models/metrics"  # each model's per-stage validation metrics (DVC metrics)
EVAL_DIR = "reports/evaluation"

# The folder options several subcommands take, each defined once here (name, default, help) and
# given to a subcommand as a parent parser: `parents=[folders["--raw-dir"], ...]`.
FOLDER_OPTIONS = {
    "--raw-dir": {
        "default": RAW_DIR,
        "help": "the raw area: photos, manifest, and the LFW pairs that calibrate "
        "the verification threshold (default: %(default)s)",
    },
    "--validated-dir": {
        "default": VALIDATED_DIR,
        "help": "validate's output: the valid photos' records and landmarks (default: %(default)s)",
    },
    "--prepared-dir": {"default": PREPARED_DIR, "help": "prepare's shards (default: %(default)s)"},
    "--models-dir": {"default": MODELS_DIR, "help": "the cascade's folder (default: %(default)s)"},
}


def _ingest(args, params):
    return steps.ingest_step(params, args.raw_dir, args.source)


def _validate(args, params):
    return steps.validate_step(params, args.raw_dir, args.out_dir)


def _prepare(args, params):
    return steps.prepare_step(params, args.raw_dir, args.validated_dir, args.out_dir)


def _run_name(args) -> str:
    return args.run_name or args.variant or "cascade"


def _model_dirs(args) -> tuple[str, str]:
    """This model's folder and resume folder: the cascade's, or the variant's beside it."""
    name = args.variant or "cascade"
    models_dir = args.models_dir or (MODELS_DIR if not args.variant else f"{VARIANTS_DIR}/{name}")
    return models_dir, args.resume_dir or f"{RESUME_DIR}/{name}"


def _train_stage(args, params):
    models_dir, resume_root = _model_dirs(args)
    dirs = steps.stage_dirs(params, args.stage, models_dir, resume_root)
    return steps.train_stage_step(
        params, args.stage, args.prepared_dir, run_name=_run_name(args), resume_uri=args.resume_uri, **dirs
    )


def _train(args, params):
    cap = args.cap_minutes * 60 if args.cap_minutes else None
    models_dir, resume_root = _model_dirs(args)
    results = steps.train_stages_step(
        params,
        args.prepared_dir,
        models_dir,
        _run_name(args),
        cap_seconds=cap,
        resume_root=resume_root,
        resume_uri=args.resume_uri,
    )
    if args.metrics_file:
        steps.write_stage_metrics(results, args.metrics_file)
    return results


def _evaluate(args, params):
    models = dict(item.split("=", 1) for item in args.model) if args.model else {}
    if not models and not args.baselines_only:
        # The cascade and every variant params' `compare` names (trained by DVC's train_variant@NAME).
        models = {"cascade": _last_checkpoint(args, params)}
        for name in params.compare:
            variant_dir = Path(args.variants_dir) / name
            checkpoint = steps.final_checkpoint(params, variant_dir)
            if not checkpoint.is_dir():
                raise FileNotFoundError(
                    f"variant {name!r} (params compare) has no checkpoint at {checkpoint}: train it with "
                    f"`facectx --variant {name} train`"
                )
            models[name] = str(checkpoint)
    return steps.evaluate_step(params, args.prepared_dir, args.raw_dir, models, args.out_dir)


def _register(args, params):
    result = steps.register_step(
        params,
        args.checkpoint or _last_checkpoint(args, params),
        args.metrics,
        example_photo=args.example_photo,
        prepared_dir=args.prepared_dir,
        raw_dir=args.raw_dir,
    )
    print(f"registered {result['model_name']} version {result['version']} as challenger ({result['model_uri']})")
    return result


def _promote(args, params):
    decision = steps.promote_step(params, force=args.force)
    print(
        f"{params.registry.model_name}: {'promoted' if decision['promoted'] else 'not promoted'} "
        f"version {decision['challenger']['version']}: {decision['reason']}"
    )
    return decision


def _hallucinate(args, params):
    result = steps.hallucinate_step(params, args.photo, args.out, args.checkpoint or _last_checkpoint(args, params))
    print(f"wrote {result['out']}")
    return result


def _airgap_pack(args, params):
    from facectx.airgap.pack import build_pack

    manifest = build_pack(
        args.params,
        args.out,
        args.prepared_dir,
        args.validated_dir,
        args.raw_dir,
        args.test_source or [],
        tuple(args.without or ()),
        args.max_mib,
    )
    rows = {
        name: {split: part["rows"] for split, part in parts.items() if isinstance(part, dict)}
        for name, parts in manifest["sets"].items()
    }
    print(
        f"wrote {args.out}: {manifest['bytes'] / 2**20:.1f} MiB (budget {args.max_mib:g} MiB); pack {manifest['id']}; "
        f"rows {rows}"
    )
    return manifest


def _airgap_run(args, params):
    from facectx.airgap.run import run

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return run(
        args.pack,
        models,
        args.out,
        args.work,
        args.profile,
        args.cap_minutes,
        args.parallel,
        args.resume_checkpoints,
        args.seed,
    )


def _airgap_import(args, params):
    from facectx.airgap.results import import_results

    result = import_results(args.results, args.pack, args.reports_dir)
    print(
        f"MLflow pipeline run {result['mlflow_parent_run']} ({len(result['mlflow_runs'])} runs); reports: "
        f"{', '.join(result['reports']) or 'none'}" + ("" if result["complete"] else " (partial results)")
    )
    return result


def _pipeline_no_variant(args):
    if args.variant:
        raise ValueError(
            "--variant does not apply to the Kubeflow pipeline: it trains params' compare "
            "(or `pipeline submit --compare`) beside the cascade"
        )


def _pipeline_compile(args, params):
    from facectx import kfp_submit

    _pipeline_no_variant(args)
    # params (loaded by main) checked the file; the pipeline builder reads it by path.
    path = kfp_submit.compile_training(args.params, args.out, args.image, args.gpus_per_stage, args.parallelism)
    print(f"wrote {path}")
    return path


def _pipeline_submit(args, params):
    from facectx import kfp_submit

    _pipeline_no_variant(args)
    run = kfp_submit.submit(
        args.params,
        args.endpoint,
        args.source,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        image=args.image,
        profile=args.profile,
        compare=args.compare,
        caching=args.caching,
        parallelism=args.parallelism,
        gpus_per_stage=args.gpus_per_stage,
        mlflow_uri=args.mlflow_uri,
        resume_uri=args.resume_uri,
        token=kfp_submit.read_token(args.token_file),
    )
    print(f"submitted run {run.run_id} ({run.name}, experiment {run.experiment})")
    print(run.url)
    return run


def _serve(args, params):
    from facectx.serving import serve

    serve(args.model_uri, args.port, args.host, args.workers)


def _last_checkpoint(args, params):
    return str(steps.final_checkpoint(params, args.models_dir))


def folder_parents() -> dict[str, argparse.ArgumentParser]:
    """One parent parser per FOLDER_OPTIONS entry, and "training": the folders of train and
    train-stage (prepared data, this model's folder, its resume state, the MLflow run's name)."""
    parents = {}
    for option, settings in FOLDER_OPTIONS.items():
        parents[option] = argparse.ArgumentParser(add_help=False)
        parents[option].add_argument(option, **settings)
    training = parents["training"] = argparse.ArgumentParser(add_help=False, parents=[parents["--prepared-dir"]])
    training.add_argument(
        "--models-dir", help=f"this model's folder (default: {MODELS_DIR}, or {VARIANTS_DIR}/VARIANT)"
    )
    training.add_argument("--resume-dir", help=f"resume state (default: {RESUME_DIR}/cascade or VARIANT)")
    training.add_argument(
        "--resume-uri",
        help="also keep the resume state at s3://bucket/prefix (one stage: that prefix; "
        "train: PREFIX/stage_N), so a run on another machine continues it",
    )
    training.add_argument("--run-name", help="names the MLflow pipeline run (default: the variant, else cascade)")
    return parents


def build_parser() -> argparse.ArgumentParser:
    folders = folder_parents()
    raw, validated, prepared, cascade = (
        folders[o] for o in ("--raw-dir", "--validated-dir", "--prepared-dir", "--models-dir")
    )
    parser = argparse.ArgumentParser(prog="facectx", description=__doc__)
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument(
        "--variant", help="apply params' variants.NAME (the ProGAN variant, an ablation) on top of the profile"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    steps = parser.add_subparsers(dest="command", required=True)

    step = steps.add_parser("ingest", parents=[raw], help="copy photos from ingest.source into the raw area + manifest")
    step.add_argument("--source", help="override ingest.source (folder or s3://bucket/prefix)")
    step.set_defaults(run=_ingest)

    step = steps.add_parser(
        "validate", parents=[raw], help="great-expectations suite + per-photo checks; quarantine the bad"
    )
    step.add_argument("--out-dir", default=VALIDATED_DIR)
    step.set_defaults(run=_validate)

    step = steps.add_parser("prepare", parents=[raw, validated], help="crops, masks, pyramid, splits, shards, preview")
    step.add_argument("--out-dir", default=PREPARED_DIR)
    step.set_defaults(run=_prepare)

    step = steps.add_parser(
        "train-stage",
        parents=[folders["training"]],
        help="train one stage of train.stages from the previous one's checkpoint "
        "(under torchrun: with DDP, one process per GPU)",
    )
    step.add_argument("--stage", type=int, required=True, help="the stage's resolution, one of params' train.stages")
    step.set_defaults(run=_train_stage)

    step = steps.add_parser(
        "train",
        parents=[folders["training"]],
        help="train every stage of train.stages in order, each from the previous one's checkpoint",
    )
    step.add_argument("--metrics-file", help="write each stage's validation metrics here (JSON; what DVC tracks)")
    step.add_argument(
        "--cap-minutes",
        type=float,
        help="wall-clock budget for all stages; a stage past its share stops "
        "cleanly, keeps its checkpoint and is marked capped",
    )
    step.set_defaults(run=_train)

    step = steps.add_parser(
        "evaluate", parents=[prepared, raw, cascade], help="score models and baselines on the test split; report"
    )
    step.add_argument(
        "--variants-dir", default=VARIANTS_DIR, help="the compared models' folders (default: %(default)s)"
    )
    step.add_argument(
        "--model",
        action="append",
        metavar="NAME=CHECKPOINT_DIR",
        help="a model to score (repeatable); default: the cascade's last stage and the variants params' compare names",
    )
    step.add_argument("--baselines-only", action="store_true")
    step.add_argument("--out-dir", default=EVAL_DIR)
    step.set_defaults(run=_evaluate)

    step = steps.add_parser(
        "register",
        parents=[cascade, prepared, raw],
        help="log the checkpoint as an MLflow pyfunc model; register it as challenger",
    )
    step.add_argument("--checkpoint", help="checkpoint folder (default: the last stage's, under --models-dir)")
    step.add_argument(
        "--metrics", default=f"{EVAL_DIR}/metrics.json", help="evaluation metrics; the gate uses methods.cascade"
    )
    step.add_argument("--example-photo", help="input example photo (default: the first test-split photo)")
    step.set_defaults(run=_register)

    step = steps.add_parser("promote", help="challenger -> champion if it wins on every registry.gate_metrics entry")
    step.add_argument(
        "--force", action="store_true", help="skip the gate (logged as forced), e.g. after the evaluation changed"
    )
    step.set_defaults(run=_promote)

    airgap = steps.add_parser("airgap", help="train on an air-gapped GPU machine: pack here, run there, import here")
    airgap_steps = airgap.add_subparsers(dest="airgap_command", required=True)
    step = airgap_steps.add_parser(
        "pack",
        parents=[prepared, validated, raw],
        help="data, weights, settings and calibration for the far machine, in one folder",
        description="Data, weights, settings and calibration for the far machine, in one "
        "folder. The photos' landmarks (from --validated-dir) are packed "
        "instead of the frame's.",
    )
    step.add_argument("out", help="pack folder to write")
    step.add_argument(
        "--test-source",
        action="append",
        metavar="FOLDER",
        help="another folder of photos (<identity>/<photo>), prepared here as an extra test set (repeatable)",
    )
    step.add_argument(
        "--without", action="append", choices=("train", "val", "test"), help="leave a split out (repeatable)"
    )
    step.add_argument(
        "--max-mib", type=float, default=DEFAULT_MAX_MIB, help="refuse a pack larger than this (default: %(default)s)"
    )
    step.set_defaults(run=_airgap_pack)

    step = airgap_steps.add_parser("run", help="on the far machine: rebuild the data, train, evaluate, write results")
    step.add_argument("pack", help="a folder made by `facectx airgap pack`")
    step.add_argument(
        "--models", default="cascade", help="comma-separated: cascade and/or params' variants (default: %(default)s)"
    )
    step.add_argument(
        "--out", required=True, help="results folder (results.tar.gz, report.html, summary.txt, progress.log)"
    )
    step.add_argument("--work", help="scratch folder for data, checkpoints and run folders (default: OUT.work)")
    step.add_argument("--profile", help="params profile to train with (default: the pack's)")
    step.add_argument(
        "--cap-minutes", type=float, help="wall-clock budget per model; capped stages stop cleanly and say so"
    )
    step.add_argument(
        "--parallel", type=int, default=1, help="models trained at once on the one GPU (default: %(default)s)"
    )
    step.add_argument(
        "--resume-checkpoints", action="store_true", help="write resumable checkpoints during training (off: faster)"
    )
    step.add_argument("--seed", type=int, help="train.seed for every model (default: the pack's params')")
    step.set_defaults(run=_airgap_run, needs_params=False)  # the pack's params, not the working directory's

    step = airgap_steps.add_parser("import", help="a far run's results.tar.gz into MLflow and reports/")
    step.add_argument("results", help="results.tar.gz from `facectx airgap run`")
    step.add_argument("--pack", help="the pack it was run from (checked)")
    step.add_argument("--reports-dir", default="reports")
    step.set_defaults(run=_airgap_import, needs_params=False)

    from facectx.kfp_submit import DEFAULT_EXPERIMENT, DEFAULT_OUT, TOKEN_ENV

    pipeline = steps.add_parser("pipeline", help="the Kubeflow training pipeline: compile it, or submit a run of it")
    pipeline_steps = pipeline.add_subparsers(dest="pipeline_command", required=True)
    compile_step = pipeline_steps.add_parser(
        "compile", help="write the pipeline YAML (for the KFP UI or `kfp run create`)"
    )
    compile_step.add_argument("--out", default=DEFAULT_OUT, help="YAML file to write (default: %(default)s)")
    compile_step.set_defaults(run=_pipeline_compile)
    submit_step = pipeline_steps.add_parser("submit", help="compile and start a run on a Kubeflow Pipelines endpoint")
    submit_step.set_defaults(run=_pipeline_submit)
    for step in (compile_step, submit_step):
        step.add_argument(
            "--image",
            help="container image for every step (default: FACECTX_IMAGE, else the image "
            "tagged with this package's version)",
        )
        step.add_argument("--gpus-per-stage", type=int, default=1, help="GPUs per training step (default: %(default)s)")
    compile_step.add_argument(
        "--parallelism", type=int, default=0, help="compared models trained at once (default: %(default)s, all at once)"
    )
    submit_step.add_argument(
        "--parallelism",
        type=int,
        default=2,
        help="compared models trained at once, capping the GPUs a run asks for (default: %(default)s)",
    )
    submit_step.add_argument(
        "--endpoint", required=True, help="the KFP API, e.g. https://kubeflow.example.com/pipeline"
    )
    submit_step.add_argument(
        "--source", required=True, help="the photos: s3://bucket/prefix, or a folder the pods can read"
    )
    submit_step.add_argument("--namespace", help="your profile namespace (multi-user Kubeflow)")
    submit_step.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (default: %(default)s)")
    submit_step.add_argument("--run-name", help="default: facectx-training <date time>")
    submit_step.add_argument("--profile", help="params profile to train with (default: the pipeline's, paper)")
    submit_step.add_argument(
        "--compare", help="comma-separated variants to train beside the cascade (default: params' compare)"
    )
    submit_step.add_argument(
        "--caching",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let validate and prepare reuse cached results (default: off, every step runs)",
    )
    submit_step.add_argument("--mlflow-uri", help="MLflow tracking URI as the pods see it (default: the pipeline's)")
    submit_step.add_argument(
        "--resume-uri", help="where training keeps resume state (default: the pipeline's; '' for none)"
    )
    submit_step.add_argument("--token-file", help=f"file holding the bearer token (default: ${TOKEN_ENV}, else none)")

    step = steps.add_parser(
        "serve", help="serve a registered model over HTTP (MLflow's scoring server), from any shell"
    )
    step.add_argument("--model-uri", default="models:/facectx-cascade@champion", help="default: %(default)s")
    step.add_argument("-p", "--port", type=int, default=5001, help="default: %(default)s")
    step.add_argument("--host", default="127.0.0.1", help="default: %(default)s (0.0.0.0 to listen on every interface)")
    step.add_argument("-w", "--workers", type=int, default=1, help="server processes (default: %(default)s)")
    step.set_defaults(run=_serve, needs_params=False)

    step = steps.add_parser("hallucinate", parents=[cascade], help="hallucinate the context of the face in one photo")
    step.add_argument("photo", help="a JPEG or PNG photo with a face")
    step.add_argument("-o", "--out", required=True, help="output PNG")
    step.add_argument("--checkpoint", help="checkpoint folder (default: the last stage's, under --models-dir)")
    step.set_defaults(run=_hallucinate)
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
        args.run(args, params)
    except Exception as err:  # a clear one-line error for known failures; traceback with -v
        if args.verbose:
            raise
        print(f"facectx {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
