"""The facectx-hallucinate pipeline's steps (pipelines/hallucinate.py): thin wrappers of
facectx.steps.hallucinate_groups, the code `facectx hallucinate-dataset` runs."""

from kfp import dsl

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def hallucinate_start(
    params_yaml: str, source: str, out: str, model: str, groups: int, mlflow_tracking_uri: str, s3_endpoint: str
) -> list:
    """List the source into OUT and stamp it with the model (or check the stamp of an earlier run);
    returns the groups of shards, one GPU step each."""
    from components.endpoints import use_s3_endpoint
    from facectx.config import parse_params
    from facectx.steps.hallucinate_groups import start_step

    use_s3_endpoint(s3_endpoint)
    return start_step(parse_params(params_yaml), source, out, model, groups, mlflow_tracking_uri or None)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def hallucinate_group(
    params_yaml: str,
    source: str,
    out: str,
    model: str,
    group: int,
    groups: int,
    mlflow_tracking_uri: str,
    s3_endpoint: str,
) -> dict:
    """Every unfinished shard i with i % groups == group; returns its throughput."""
    from components.endpoints import use_s3_endpoint
    from facectx.config import parse_params
    from facectx.steps.hallucinate_groups import group_step

    use_s3_endpoint(s3_endpoint)
    return group_step(parse_params(params_yaml), source, out, model, group, groups, mlflow_tracking_uri or None)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def hallucinate_gather(
    params_yaml: str,
    source: str,
    out: str,
    model: str,
    group_reports: list,
    mlflow_tracking_uri: str,
    s3_endpoint: str,
) -> dict:
    """The shards' manifests and quarantine tables into one, the summary, and the MLflow run."""
    from components.endpoints import use_s3_endpoint
    from facectx.config import parse_params
    from facectx.steps.hallucinate_groups import gather_step

    use_s3_endpoint(s3_endpoint)
    return gather_step(parse_params(params_yaml), source, out, model, group_reports, mlflow_tracking_uri or None)
