from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def register(
    params_yaml: str,
    pipeline_run_id: str,
    mlflow_tracking_uri: str,
    s3_endpoint: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    dvc_remote: str,
    data: Input[Artifact],
) -> int:
    """Log the cascade as an MLflow pyfunc model and register it as `challenger`, with the
    evaluation's cascade metrics for the promotion gate and the run's data version as tags;
    returns the new version. Fetches one test photo (the input example) from the data version."""
    import os
    import tempfile

    from components.endpoints import use_s3_endpoint
    from facectx import layout
    from facectx.config import parse_params
    from facectx.data.versioning import DataRemote, version_tags
    from facectx.steps.register import register_step
    from facectx.steps.version import fetch_example_photo

    use_s3_endpoint(s3_endpoint)
    photo = fetch_example_photo(data.path, DataRemote(dvc_remote, s3_endpoint or None), tempfile.mkdtemp())
    result = register_step(
        parse_params(params_yaml),
        str(layout.checkpoint_dir(model.path)),
        os.path.join(evaluation.path, "metrics.json"),
        example_photo=photo,
        pipeline_run=pipeline_run_id,
        tracking_uri=mlflow_tracking_uri or None,
        data_tags=version_tags(data.path),
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
