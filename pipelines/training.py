"""The training pipeline: ingest -> validate -> prepare -> train@<each of train.stages> (the
cascade, and in parallel each comparison model named by `compare`) -> evaluate -> register ->
promote; one GAN stage per step on a GPU node, each starting from the previous stage's model.

The stage chain is read from params' train.stages when the pipeline is built (compiled); the
profile and the comparison list are parameters of each run. Every step receives the Kubeflow run
id, so each run is its own MLflow pipeline run (a run per model with a run per stage under it,
and evaluation, registration and promotion beside them).

Caching: off for every step with side effects or changing input (ingest reads a prefix whose
contents change; training, evaluation, registration and promotion log to MLflow); validate and
prepare are pure functions of their inputs and may be reused.
"""

from kfp import dsl

from components.evaluate import evaluate
from components.ingest import ingest
from components.prepare import prepare
from components.register import promote, register
from components.train_stage import compared_variants, resolve_params, train_stage
from components.validate import validate
from facectx.config import DEFAULT_PARAMS_FILE, load_params, pipeline_params_text
from facectx.layout import CASCADE
from pipelines.gpu import MLFLOW_URI, RESUME_URI, on_gpu, with_services


def training_steps(
    stages, run_inputs: dict, prepared, run_id, mlflow_tracking_uri, resume_uri, gpus, variant="", label=CASCADE
):
    """train@first ... train@last chained through their models; returns the last task.
    run_inputs: the run's params_yaml, profile and compare as submitted."""
    previous = None
    for stage in stages:
        inputs = {"previous": previous.outputs["model"]} if previous is not None else {}
        task = train_stage(
            **run_inputs,
            stage=stage,
            pipeline_run_id=run_id,
            mlflow_tracking_uri=mlflow_tracking_uri,
            resume_uri=resume_uri,
            prepared=prepared,
            variant=variant,
            gpus=gpus,
            **inputs,
        )
        previous = on_gpu(task.set_display_name(f"{label} train@{stage}").set_caching_options(False), gpus)
    return previous


def data_steps(settings, source):
    """ingest -> validate -> prepare; returns (the raw photos, the prepared data) outputs."""
    raw = with_services(
        ingest(params_yaml=settings, source=source).set_display_name("ingest").set_caching_options(False)
    )
    checked = validate(params_yaml=settings, raw=raw.outputs["raw"]).set_display_name("validate")
    prepared = prepare(params_yaml=settings, raw=raw.outputs["raw"], validated=checked.outputs["validated"])
    prepared.set_display_name("prepare").set_cpu_request("4").set_memory_request("8G")
    return raw.outputs["raw"], prepared.outputs["prepared"]


def scoring_steps(tracked: dict, prepared, raw, model, variants) -> None:
    """evaluate (the cascade `model`, the compared `variants`, the baselines) -> register -> promote.
    tracked: the inputs every tracked step takes (params_yaml, pipeline_run_id, mlflow_tracking_uri)."""
    scored = evaluate(**tracked, prepared=prepared, raw=raw, model=model, variants=variants)
    with_services(
        scored.set_display_name("evaluate").set_caching_options(False).set_cpu_request("8").set_memory_request("16G")
    )
    registered = register(**tracked, model=model, evaluation=scored.outputs["evaluation"], prepared=prepared, raw=raw)
    with_services(registered.set_display_name("register").set_caching_options(False))
    with_services(promote(**tracked, version=registered.output).set_display_name("promote").set_caching_options(False))


def build_training_pipeline(params_file=DEFAULT_PARAMS_FILE, gpus_per_stage: int = 1, parallelism: int = 0):
    """The pipeline for a params file: its stage list, and the file as the default params_yaml.
    gpus_per_stage: GPUs (DDP processes) per training step; parallelism: how many compared models
    train at once (0: all), which caps the GPUs a run asks for at (1 + parallelism) x gpus_per_stage."""
    stages = list(load_params(params_file).train.stages)
    default_params = pipeline_params_text(params_file)

    @dsl.pipeline(name="facectx-training", description="Hallucinating face context: the cascaded multi-scale GAN")
    def training_pipeline(
        source: str,
        profile: str = "paper",
        compare: str = "",
        params_yaml: str = default_params,
        mlflow_tracking_uri: str = MLFLOW_URI,
        resume_uri: str = RESUME_URI,
    ):
        """source: the photos (s3://bucket/prefix, or a folder the pods can read); profile: params'
        profile (paper, quick); compare: comma-separated variants to train beside the cascade
        (empty: params' compare); resume_uri: where training keeps resume state ('' for none)."""
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        resolved = resolve_params(params_yaml=params_yaml, profile=profile, compare=compare, compiled_stages=stages)
        resolved.set_display_name("params").set_caching_options(False)
        settings = resolved.output
        raw, prepared = data_steps(settings, source)
        run_inputs = {"params_yaml": params_yaml, "profile": profile, "compare": compare}
        trained = dict(stages=stages, run_inputs=run_inputs, prepared=prepared, run_id=run_id, gpus=gpus_per_stage)
        trained.update(mlflow_tracking_uri=mlflow_tracking_uri, resume_uri=resume_uri)
        last = training_steps(**trained)
        # The comparison models train in parallel, each its own chain, at most `parallelism` at once.
        compared = (
            compared_variants(params_yaml=settings).set_display_name("compared models").set_caching_options(False)
        )
        with dsl.ParallelFor(items=compared.output, parallelism=parallelism) as variant:
            variant_last = training_steps(**trained, variant=variant, label="variant")
        tracked = {"params_yaml": settings, "pipeline_run_id": run_id, "mlflow_tracking_uri": mlflow_tracking_uri}
        scoring_steps(tracked, prepared, raw, last.outputs["model"], dsl.Collected(variant_last.outputs["model"]))

    return training_pipeline
