from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import FACECTX_IMAGE


@dsl.component(base_image=FACECTX_IMAGE)
def train_stage(params_yaml: str, stage: int, run_name: str, mlflow_tracking_uri: str, prepared: Input[Dataset],
                model: Output[Model], metrics: Output[Metrics], previous: Input[Model] = None, variant: str = "") -> float:
    """Train block `stage` from the previous stage's model (of the cascade, or of params'
    variants.`variant`); returns the validation SSIM."""
    import os

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri

    from facectx.config import parse_params
    from facectx.steps import train_stage_step

    init_dir = os.path.join(previous.path, "checkpoint") if previous is not None else None
    # Resume state lives beside the output so a retried pod on the same volume continues.
    result = train_stage_step(parse_params(params_yaml, variant=variant or None), stage, prepared.path, model.path,
                              init_dir, os.path.join(model.path, "resume"), run_name)
    model.metadata.update({"stage": stage, "variant": variant or "cascade", "framework": "pytorch", "format": "safetensors"})
    for name, value in result.items():
        metrics.log_metric(name, float(value))
    return result["val_ssim"]


@dsl.component(base_image=FACECTX_IMAGE)
def compared_variants(params_yaml: str) -> List[str]:
    """params' `compare`: the comparison models (ProGAN variant, ablations) to train beside the cascade."""
    from facectx.config import parse_params

    return list(parse_params(params_yaml).compare)
