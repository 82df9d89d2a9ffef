from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import FACECTX_IMAGE


@dsl.component(base_image=FACECTX_IMAGE, install_kfp_package=False)
def ingest(params_yaml: str, source: str, raw: Output[Dataset]) -> int:
    """Copy photos from `source` (folder or s3://) into the raw area; returns photos found."""
    from facectx.config import parse_params
    from facectx.steps.ingest import ingest_step

    summary = ingest_step(parse_params(params_yaml), raw.path, source or None)
    raw.metadata.update({k: v for k, v in summary.items() if isinstance(v, int)})
    return summary["photos_found"]
