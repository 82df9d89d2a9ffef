"""facectx pipeline compile | submit: the Kubeflow training pipeline."""

from __future__ import annotations

import argparse

from pipelines import DEFAULT_EXPERIMENT, DEFAULT_OUT, TOKEN_ENV


def add_parser(commands) -> None:
    pipeline = commands.add_parser("pipeline", help="the Kubeflow training pipeline: compile it, or submit a run of it")
    pipeline_steps = pipeline.add_subparsers(dest="pipeline_command", required=True)
    step = pipeline_steps.add_parser("compile", help="write the pipeline YAML (for the KFP UI or `kfp run create`)")
    step.add_argument("--out", default=DEFAULT_OUT, help="YAML file to write (default: %(default)s)")
    step.set_defaults(func=compile_pipeline)
    _add_build_options(step)
    step.add_argument(
        "--parallelism", type=int, default=0, help="compared models trained at once (default: %(default)s, all at once)"
    )
    _add_submit(pipeline_steps)


def _add_build_options(step) -> None:
    """The options compile and submit share: how the pipeline is built."""
    step.add_argument(
        "--image",
        help="container image for every step (default: FACECTX_IMAGE, else the image "
        "tagged with this package's version)",
    )
    step.add_argument("--gpus-per-stage", type=int, default=1, help="GPUs per training step (default: %(default)s)")


def _add_submit(pipeline_steps) -> None:
    step = pipeline_steps.add_parser("submit", help="compile and start a run on a Kubeflow Pipelines endpoint")
    step.set_defaults(func=submit)
    _add_build_options(step)
    step.add_argument(
        "--parallelism",
        type=int,
        default=2,
        help="compared models trained at once, capping the GPUs a run asks for (default: %(default)s)",
    )
    step.add_argument("--endpoint", required=True, help="the KFP API, e.g. https://kubeflow.example.com/pipeline")
    step.add_argument("--source", required=True, help="the photos: s3://bucket/prefix, or a folder the pods can read")
    step.add_argument("--namespace", help="your profile namespace (multi-user Kubeflow)")
    step.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (default: %(default)s)")
    step.add_argument("--run-name", help="default: facectx-training <date time>")
    step.add_argument("--profile", help="params profile to train with (default: the pipeline's, paper)")
    step.add_argument(
        "--compare", help="comma-separated variants to train beside the cascade (default: params' compare)"
    )
    step.add_argument(
        "--caching",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let validate and prepare reuse cached results (default: off, every step runs)",
    )
    step.add_argument("--mlflow-uri", help="MLflow tracking URI as the pods see it (default: the pipeline's)")
    step.add_argument("--resume-uri", help="where training keeps resume state (default: the pipeline's; '' for none)")
    step.add_argument("--token-file", help=f"file holding the bearer token (default: ${TOKEN_ENV}, else none)")


def _no_variant(args) -> None:
    if args.variant:
        raise ValueError(
            "--variant does not apply to the Kubeflow pipeline: it trains params' compare "
            "(or `pipeline submit --compare`) beside the cascade"
        )


def compile_pipeline(args, params):
    _no_variant(args)
    # params (loaded by main) checked the file; the pipeline builder reads it by path.
    from pipelines import submit as kubeflow  # kfp and every component: only these commands need them

    path = kubeflow.compile_training(args.params, args.out, args.image, args.gpus_per_stage, args.parallelism)
    print(f"wrote {path}")
    return path


def submit(args, params):
    _no_variant(args)
    from pipelines import submit as kubeflow  # kfp and every component: only these commands need them

    run = kubeflow.submit(
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
        token=kubeflow.read_token(args.token_file),
    )
    print(f"submitted run {run.run_id} ({run.name}, experiment {run.experiment})")
    print(run.url)
    return run
