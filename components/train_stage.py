from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def train_stage(
    params_yaml: str,
    profile: str,
    compare: str,
    stage: int,
    pipeline_run_id: str,
    mlflow_tracking_uri: str,
    resume_uri: str,
    s3_endpoint: str,
    dvc_remote: str,
    data: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    previous: Input[Model] = None,
    variant: str = "",
    gpus: int = 1,
) -> float:
    """Train block `stage` from the previous stage's model (of the cascade, or of params'
    variants.`variant`); returns the validation SSIM. Takes the run's params as submitted and
    resolves them as `resolve_params` does (kfp.local hands a task inside a ParallelFor the loop
    item in place of an upstream task's output parameter).

    `data` is the run's data version (.dvc pointers): the stage fetches only what it reads.
    Resume state is kept under resume_uri/<run id>/<model>/stage_N, so a retried pod (preempted,
    evicted) continues from the last save on whatever node it lands. With several GPUs the stage
    trains with DDP, one process per GPU."""
    from components.endpoints import use_s3_endpoint
    from components.stage_inputs import resume_places, stage_data
    from facectx import layout
    from facectx.config import parse_params, resolve_params_text
    from facectx.steps.train import train_stage_on_gpus

    use_s3_endpoint(s3_endpoint)
    name = variant or layout.CASCADE
    params = parse_params(resolve_params_text(params_yaml, profile, compare), variant=variant or None)
    fetched = stage_data(data.path, dvc_remote, s3_endpoint, stage, params.prepare.resolutions)
    arguments = dict(
        params=params,
        stage=stage,
        prepared_dir=fetched["prepared_dir"],
        out_dir=model.path,
        init_dir=str(layout.checkpoint_dir(previous.path)) if previous is not None else None,
        **resume_places(resume_uri, pipeline_run_id, name, stage),
        run_name=name,
        pipeline_run=pipeline_run_id,
        tracking_uri=mlflow_tracking_uri or None,
        data_tags=fetched["data_tags"],
        stage_tags=fetched["stage_tags"],
    )
    result = train_stage_on_gpus(gpus, **arguments)
    model.metadata.update({"stage": stage, "variant": name, "framework": "pytorch", "format": "safetensors"})
    for key, value in {**result, "data_bytes_fetched": fetched["bytes"]}.items():
        metrics.log_metric(key, float(value))
    return result["val_ssim"]


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def resolve_params(params_yaml: str, profile: str, compare: str, compiled_stages: list[int]) -> str:
    """The params every later step reads: params_yaml with the submitted profile and comparison
    list applied and checked. The stage chain is fixed when the pipeline is compiled, so params
    asking for other stages are refused."""
    from facectx.config import parse_params, resolve_params_text

    text = resolve_params_text(params_yaml, profile, compare)
    stages = list(parse_params(text).train.stages)
    if stages != [int(s) for s in compiled_stages]:
        raise ValueError(
            f"params' train.stages {stages} differ from the stages this pipeline was compiled for "
            f"{[int(s) for s in compiled_stages]}: compile it again (facectx pipeline compile)"
        )
    return text


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def compared_variants(params_yaml: str) -> list[str]:
    """params' `compare`: the comparison models (ProGAN variant, ablations) to train beside the cascade."""
    from facectx.config import parse_params

    return list(parse_params(params_yaml).compare)
