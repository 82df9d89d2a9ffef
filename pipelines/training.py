"""The training pipeline: ingest -> validate -> prepare -> version data -> train@<each of
train.stages> (the cascade, and in parallel each comparison model named by `compare`) -> evaluate
-> register -> promote; one GAN stage per step on a GPU node, each starting from the previous
stage's model.

The data are versioned with DVC inside the run: the version step pushes the photos and the
prepared data to the DVC remote (`dvc_remote`) and hands later steps their .dvc pointers, not the
data; each fetches only what it reads (a training stage its resolutions, evaluation the test split,
register one photo) and tags its MLflow run (and the registered model version) with the version.

The stage chain is read from params' train.stages when the pipeline is built (compiled); the
profile and the comparison list are parameters of each run. Every step receives the Kubeflow run
id, so each run is its own MLflow pipeline run (a run per model with a run per stage under it,
and evaluation, registration and promotion beside them).

Caching: off for every step, by kfp's own switch for the default (pipeline_context.Pipeline's
execution-caching default, what `kfp dsl compile --disable-execution-caching-by-default` sets),
so it holds in every DAG, the ParallelFor's included. No step here could be reused anyway: KFP's
cache key holds the names of a step's input artifacts, new in every run of the uncached ingest
(which must run: the prefix it reads changes), so nothing downstream of it ever hits; the rest
log to MLflow.
"""

import contextlib

from kfp import dsl
from kfp.dsl import pipeline_context

from components.evaluate import evaluate
from components.ingest import ingest
from components.prepare import prepare
from components.register import promote, register
from components.train_stage import compared_variants, resolve_params, train_stage
from components.validate import validate
from components.version_data import version_data
from facectx.config import DEFAULT_PARAMS_FILE, load_params, pipeline_params_text
from facectx.layout import CASCADE
from pipelines.gpu import (
    DVC_REMOTE,
    MLFLOW_URI,
    RESUME_URI,
    S3_ENDPOINT,
    GpuPlacement,
    for_training,
    on_gpu,
    with_s3_credentials,
    with_services,
)


def training_steps(stages, run_inputs: dict, data, services: dict, run_id, resume_uri, gpus, placement, variant=""):
    """train@first ... train@last chained through their models; returns the last task.
    run_inputs: the run's params_yaml, profile and compare as submitted; data: the data version
    and its remote (version_data's pointers, dvc_remote); services: the run's mlflow_tracking_uri
    and s3_endpoint."""
    previous = None
    for stage in stages:
        inputs = {"previous": previous.outputs["model"]} if previous is not None else {}
        task = train_stage(
            **run_inputs,
            **services,
            stage=stage,
            pipeline_run_id=run_id,
            resume_uri=resume_uri,
            **data,
            variant=variant,
            gpus=gpus,
            **inputs,
        )
        label = "variant" if variant else CASCADE
        previous = for_training(on_gpu(task.set_display_name(f"{label} train@{stage}"), gpus, placement))
    return previous


def data_steps(settings, source, s3_endpoint, dvc_remote) -> dict:
    """ingest -> validate -> prepare -> version data; returns what later steps take: the data
    version (pointers) and the remote it is in."""
    raw = with_s3_credentials(ingest(params_yaml=settings, source=source, s3_endpoint=s3_endpoint))
    raw.set_display_name("ingest")
    checked = validate(params_yaml=settings, raw=raw.outputs["raw"]).set_display_name("validate")
    prepared = prepare(params_yaml=settings, raw=raw.outputs["raw"], validated=checked.outputs["validated"])
    prepared.set_display_name("prepare").set_cpu_request("4").set_memory_request("8G")
    versioned = version_data(
        raw=raw.outputs["raw"], prepared=prepared.outputs["prepared"], dvc_remote=dvc_remote, s3_endpoint=s3_endpoint
    )
    with_s3_credentials(versioned.set_display_name("version data"))
    return {"data": versioned.outputs["data"], "dvc_remote": dvc_remote}


def scoring_steps(tracked: dict, data: dict, model, variants, placement: GpuPlacement, gpus: int) -> None:
    """evaluate (the cascade `model`, the compared `variants`, the baselines; on `gpus` GPUs) ->
    register -> promote. tracked: the inputs every tracked step takes (params_yaml,
    pipeline_run_id, mlflow_tracking_uri, s3_endpoint); data: as training_steps takes it."""
    scored = evaluate(**tracked, **data, model=model, variants=variants)
    on_gpu(scored.set_display_name("evaluate"), gpus, placement, memory_per_gpu_gib=32)
    registered = register(**tracked, **data, model=model, evaluation=scored.outputs["evaluation"])
    with_services(registered.set_display_name("register"))
    with_services(promote(**tracked, version=registered.output).set_display_name("promote"))


@contextlib.contextmanager
def _caching_off_by_default():
    """kfp's switch for the caching default of the tasks made meanwhile (kfp's compile CLI sets the
    same attribute for --disable-execution-caching-by-default); restored after, so building this
    pipeline changes nothing for other kfp code in the process."""
    saved = pipeline_context.Pipeline._execution_caching_default
    pipeline_context.Pipeline._execution_caching_default = False
    try:
        yield
    finally:
        pipeline_context.Pipeline._execution_caching_default = saved


def build_training_pipeline(
    params_file=DEFAULT_PARAMS_FILE,
    gpus_per_stage: int = 1,
    parallelism: int = 0,
    placement: GpuPlacement | None = None,
):
    """The pipeline for a params file: its stage list, and the file as the default params_yaml.
    gpus_per_stage: GPUs (DDP processes) per training step, and evaluate gets one; 0: every step on
    CPUs (a kfp.local rehearsal), else a step whose node cannot use its GPUs fails at once;
    parallelism: how many compared models train at once (0: all), which caps the GPUs a run asks
    for at (1 + parallelism) x gpus_per_stage; placement: where GPU steps land (default: by their
    GPU limit alone)."""
    if gpus_per_stage < 0:
        raise ValueError(f"gpus_per_stage is {gpus_per_stage}: give 1 or more GPUs per training step (0: CPUs only)")
    placement = placement or GpuPlacement()
    stages = list(load_params(params_file).train.stages)
    default_params = pipeline_params_text(params_file)

    def training_pipeline(
        source: str,
        profile: str = "paper",
        compare: str = "",
        params_yaml: str = default_params,
        mlflow_tracking_uri: str = MLFLOW_URI,
        s3_endpoint: str = S3_ENDPOINT,
        resume_uri: str = RESUME_URI,
        dvc_remote: str = DVC_REMOTE,
    ):
        """source: the photos, an s3://bucket/prefix; profile: params' profile (paper, quick);
        compare: comma-separated variants to train beside the cascade (empty: params' compare);
        mlflow_tracking_uri, s3_endpoint: the services as the pods reach them ('' for the pod's
        environment); resume_uri: where training keeps resume state ('' for none); dvc_remote:
        the DVC remote the run's data are versioned in (s3://bucket/prefix)."""
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        resolved = resolve_params(params_yaml=params_yaml, profile=profile, compare=compare, compiled_stages=stages)
        settings = resolved.set_display_name("params").output
        data = data_steps(settings, source, s3_endpoint, dvc_remote)
        services = {"mlflow_tracking_uri": mlflow_tracking_uri, "s3_endpoint": s3_endpoint}
        run_inputs = {"params_yaml": params_yaml, "profile": profile, "compare": compare}
        trained = dict(stages=stages, run_inputs=run_inputs, data=data, services=services, run_id=run_id)
        trained.update(resume_uri=resume_uri, gpus=gpus_per_stage, placement=placement)
        last = training_steps(**trained)
        # The comparison models train in parallel, each its own chain, at most `parallelism` at once.
        compared = compared_variants(params_yaml=settings).set_display_name("compared models")
        with dsl.ParallelFor(items=compared.output, parallelism=parallelism) as variant:
            variant_last = training_steps(**trained, variant=variant)
        tracked = {"params_yaml": settings, "pipeline_run_id": run_id, **services}
        models = dsl.Collected(variant_last.outputs["model"])
        scoring_steps(tracked, data, last.outputs["model"], models, placement, min(gpus_per_stage, 1))

    with _caching_off_by_default():  # the tasks are made here, when the pipeline is declared
        return dsl.pipeline(
            name="facectx-training", description="Hallucinating face context: the cascaded multi-scale GAN"
        )(training_pipeline)
