from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def evaluate(
    params_yaml: str,
    pipeline_run_id: str,
    mlflow_tracking_uri: str,
    s3_endpoint: str,
    dvc_remote: str,
    data: Input[Artifact],
    model: Input[Model],
    variants: Input[list[Model]],
    evaluation: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> float:
    """Score the cascade, the comparison models (each named by its `variant` metadata) and the
    baselines on the test split; returns the cascade's Fréchet distance. Fetches from the run's
    data version (`data`) the test split and the photos of the calibration pairs, nothing more."""
    import os
    import shutil
    import tempfile

    from components.endpoints import use_s3_endpoint
    from facectx import layout
    from facectx.config import parse_params
    from facectx.data.versioning import DataRemote, version_tags
    from facectx.steps.evaluate import evaluate_step
    from facectx.steps.version import fetch_evaluation_data

    use_s3_endpoint(s3_endpoint)
    params = parse_params(params_yaml)
    remote = DataRemote(dvc_remote, s3_endpoint or None)
    resolutions, pairs = params.prepare.resolutions, params.evaluate.calibration_pairs
    fetched = fetch_evaluation_data(data.path, remote, resolutions, pairs, tempfile.mkdtemp())
    # Each model's last stage: the cascade's, then each compared variant's (named by its metadata).
    names = layout.evaluated_models(variant.metadata["variant"] for variant in variants)
    models = {name: str(layout.checkpoint_dir(m.path)) for name, m in zip(names, [model, *variants])}
    result = evaluate_step(
        params,
        fetched["prepared_dir"],
        fetched["raw_dir"],
        models,
        evaluation.path,
        pipeline_run=pipeline_run_id,
        tracking_uri=mlflow_tracking_uri or None,
        data_tags=version_tags(data.path),
    )
    shutil.copy(os.path.join(evaluation.path, "report.html"), report.path)
    for method, values in result["methods"].items():
        for name, value in values.items():
            metrics.log_metric(f"{method}/{name}".replace(" ", "_"), float(value))
    return result["methods"][layout.CASCADE]["fd"]
