from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def version_data(
    raw: Input[Dataset], prepared: Input[Dataset], dvc_remote: str, s3_endpoint: str, data: Output[Artifact]
) -> dict:
    """Push the ingested photos and the prepared data to the DVC remote (objects it already holds
    are not sent again) and output their .dvc pointer files: the run's data version. Later steps
    receive the pointers and fetch only what they read; `dvc pull` in a clone holding them gets
    the same bytes. Returns the version's MLflow tags ({facectx.data.dvc.<path>: md5})."""
    from components.endpoints import use_s3_endpoint
    from facectx.data.versioning import DataRemote
    from facectx.steps.version import version_data_step

    use_s3_endpoint(s3_endpoint)
    result = version_data_step(raw.path, prepared.path, DataRemote(dvc_remote, s3_endpoint or None), data.path)
    data.metadata.update({"dvc_remote": dvc_remote, **result["versions"]})
    return result["tags"]
