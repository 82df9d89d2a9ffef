"""facectx pipeline compile | submit | retry: the Kubeflow pipelines (training, hallucinate)."""

from __future__ import annotations

from pipelines import DEFAULT_EXPERIMENT, DEFAULT_OUT, TOKEN_ENV


def add_parser(commands) -> None:
    pipeline = commands.add_parser(
        "pipeline",
        help="the Kubeflow pipelines (training, hallucinate): compile one, submit a run of it, retry a failed run",
    )
    pipeline_steps = pipeline.add_subparsers(dest="pipeline_command", required=True)
    step = pipeline_steps.add_parser("compile", help="write the pipeline YAML (for the KFP UI or `kfp run create`)")
    step.add_argument("--out", default=DEFAULT_OUT, help="YAML file to write (default: %(default)s)")
    step.add_argument(
        "--pipeline",
        choices=("training", "hallucinate"),
        default="training",
        help="facectx-training, or facectx-hallucinate (a registered model over a whole dataset)",
    )
    step.set_defaults(func=compile_pipeline)
    _add_build_options(step)
    step.add_argument(
        "--parallelism", type=int, default=0, help="compared models trained at once (default: %(default)s, all at once)"
    )
    _add_submit(pipeline_steps)
    _add_retry(pipeline_steps)


def _add_build_options(step) -> None:
    """The options compile and submit share: how the pipeline is built."""
    step.add_argument(
        "--image",
        help="container image for every step (default: FACECTX_IMAGE, else the tag `make image` gives "
        "an image of this checkout: ghcr.io/facectx/facectx:<version>-<git short sha>)",
    )
    step.add_argument("--gpus-per-stage", type=int, default=1, help="GPUs per training step (default: %(default)s)")
    step.add_argument(
        "--node-selector",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="a node label the GPU steps require (repeatable; default: none, the GPU limit alone places them)",
    )
    step.add_argument(
        "--toleration",
        action="append",
        default=[],
        metavar="KEY[=VALUE][:EFFECT]",
        help="a taint the GPU steps tolerate, beyond the GPU resource's own NoSchedule taint (repeatable)",
    )
    step.add_argument(
        "--accelerator-type",
        default="nvidia.com/gpu",
        help="the extended resource GPU steps request, e.g. nvidia.com/mig-3g.40gb (default: %(default)s)",
    )


def _add_submit(pipeline_steps) -> None:
    step = pipeline_steps.add_parser("submit", help="compile and start a run on a Kubeflow Pipelines endpoint")
    step.set_defaults(func=submit)
    step.add_argument(
        "--pipeline",
        choices=("training", "hallucinate"),
        default="training",
        help="facectx-training, or facectx-hallucinate (a registered model over a whole dataset)",
    )
    _add_build_options(step)
    step.add_argument(
        "--parallelism",
        type=int,
        help="training: compared models trained at once, capping the GPUs a run asks for (default: 2); "
        "hallucinate: GPU steps at once, one group of shards each (default: the pipeline's, 8)",
    )
    _add_endpoint_options(step)
    step.add_argument("--source", required=True, help="the photos: an S3 prefix, s3://bucket/prefix")
    step.add_argument("--out", help="hallucinate: where the frames, manifest and quarantine go, s3://bucket/prefix")
    step.add_argument(
        "--model", help="hallucinate: models:/NAME@alias or models:/NAME/VERSION (default: the pipeline's, @champion)"
    )
    step.add_argument("--namespace", help="your profile namespace (multi-user Kubeflow)")
    step.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (default: %(default)s)")
    step.add_argument("--run-name", help="default: facectx-<pipeline> <date time>")
    step.add_argument("--profile", help="training: params profile to train with (default: the pipeline's, paper)")
    step.add_argument(
        "--compare", help="training: comma-separated variants to train beside the cascade (default: params' compare)"
    )
    step.add_argument("--mlflow-uri", help="MLflow tracking URI as the pods see it (default: the pipeline's)")
    step.add_argument("--s3-endpoint", help="the object store's URL as the pods see it (default: the pipeline's)")
    step.add_argument(
        "--resume-uri", help="training: where resume state is kept (default: the pipeline's; '' for none)"
    )
    step.add_argument(
        "--dvc-remote", help="training: the DVC remote the run versions its data in (default: the pipeline's)"
    )


def _add_retry(pipeline_steps) -> None:
    step = pipeline_steps.add_parser(
        "retry",
        help="run a failed run's failed steps again (e.g. a preempted training pod); training resumes from its S3 state",
    )
    step.set_defaults(func=retry, needs_params=False)  # the run carries its own params
    step.add_argument("run_id", metavar="RUN_ID", help="the Kubeflow run's id (`facectx pipeline submit` prints it)")
    _add_endpoint_options(step)


def _add_endpoint_options(step) -> None:
    step.add_argument("--endpoint", required=True, help="the KFP API, e.g. https://kubeflow.example.com/pipeline")
    step.add_argument("--token-file", help=f"file holding the bearer token (default: ${TOKEN_ENV}, else none)")


def _no_variant(args) -> None:
    if args.variant:
        raise ValueError(
            "--variant does not apply to the Kubeflow pipeline: it trains params' compare "
            "(or `pipeline submit --compare`) beside the cascade"
        )


def _placement(args):
    from pipelines.gpu import GpuPlacement, Toleration

    return GpuPlacement(
        node_selector=tuple(GpuPlacement.parse_label(text) for text in args.node_selector),
        tolerations=tuple(Toleration.parse(text) for text in args.toleration),
        accelerator=args.accelerator_type,
    )


def compile_pipeline(args, params):
    _no_variant(args)
    # params (loaded by main) checked the file; the pipeline builder reads it by path.
    from pipelines.compile import compile_pipeline as compile_to  # kfp and every component: only here

    path = compile_to(
        args.params, args.out, args.image, args.gpus_per_stage, args.parallelism, _placement(args), args.pipeline
    )
    print(f"wrote {path}")
    return path


def submit(args, params):
    _no_variant(args)
    from pipelines import submit as kubeflow  # kfp and every component: only these commands need them

    run = kubeflow.submit(
        args.params,
        args.endpoint,
        args.source,
        pipeline=args.pipeline,
        out=args.out,
        model=args.model,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        image=args.image,
        profile=args.profile,
        compare=args.compare,
        parallelism=args.parallelism,
        gpus_per_stage=args.gpus_per_stage,
        placement=_placement(args),
        mlflow_uri=args.mlflow_uri,
        s3_endpoint=args.s3_endpoint,
        resume_uri=args.resume_uri,
        dvc_remote=args.dvc_remote,
        token=kubeflow.read_token(args.token_file),
    )
    print(f"submitted run {run.run_id} ({run.name}, experiment {run.experiment})")
    print(run.url)
    return run


def retry(args, params):
    from pipelines import submit as kubeflow

    state = kubeflow.retry(args.endpoint, args.run_id, token=kubeflow.read_token(args.token_file))
    print(
        f"retrying run {args.run_id} (was {state}): its failed steps start again; "
        "training steps resume from their last saved state under the run's resume_uri"
    )
    return args.run_id
