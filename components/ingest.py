from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def ingest(params_yaml: str, source: str, s3_endpoint: str, raw: Output[Dataset]) -> int:
    """Copy photos from `source` (an s3:// prefix; kfp.local also takes a folder) into the raw area;
    returns photos found."""
    from components.endpoints import use_s3_endpoint
    from facectx.config import parse_params
    from facectx.steps.ingest import ingest_step

    use_s3_endpoint(s3_endpoint)
    summary = ingest_step(parse_params(params_yaml), raw.path, source or None)
    raw.metadata.update({k: v for k, v in summary.items() if isinstance(v, int)})
    return summary["photos_found"]
