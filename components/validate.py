from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def validate(params_yaml: str, raw: Input[Dataset], validated: Output[Dataset], metrics: Output[Metrics]) -> float:
    """The great-expectations suite and per-photo checks; returns the valid fraction."""
    from facectx.config import parse_params
    from facectx.steps.validate import validate_step

    result = validate_step(parse_params(params_yaml), raw.path, validated.path)
    for name, value in result.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, value)
    return result["valid_fraction"]
