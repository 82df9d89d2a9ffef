from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def register(
    params_yaml: str,
    pipeline_run_id: str,
    mlflow_tracking_uri: str,
    s3_endpoint: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    prepared: Input[Dataset],
    raw: Input[Dataset],
) -> int:
    """Log the cascade as an MLflow pyfunc model and register it as `challenger`, with the
    evaluation's cascade metrics for the promotion gate; returns the new version."""
    import os

    from components.endpoints import use_s3_endpoint
    from facectx import layout
    from facectx.config import parse_params
    from facectx.steps.register import register_step

    use_s3_endpoint(s3_endpoint)
    result = register_step(
        parse_params(params_yaml),
        str(layout.checkpoint_dir(model.path)),
        os.path.join(evaluation.path, "metrics.json"),
        prepared_dir=prepared.path,
        raw_dir=raw.path,
        pipeline_run=pipeline_run_id,
        tracking_uri=mlflow_tracking_uri or None,
    )
    return result["version"]


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def promote(params_yaml: str, pipeline_run_id: str, mlflow_tracking_uri: str, s3_endpoint: str, version: int) -> bool:
    """Move `champion` to the challenger only if it wins on every registry.gate_metrics entry
    (no champion yet: promote); returns whether `version` is now the champion."""
    from components.endpoints import use_s3_endpoint
    from facectx.config import parse_params
    from facectx.steps.register import promote_step

    use_s3_endpoint(s3_endpoint)
    decision = promote_step(
        parse_params(params_yaml),
        expected_version=version,
        pipeline_run=pipeline_run_id,
        tracking_uri=mlflow_tracking_uri or None,
    )
    return bool(decision["promoted"])
