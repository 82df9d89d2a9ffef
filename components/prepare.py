from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def prepare(
    params_yaml: str,
    raw: Input[Dataset],
    validated: Input[Dataset],
    prepared: Output[Dataset],
    metrics: Output[Metrics],
) -> int:
    """Crops, masks, pyramid, identity-disjoint splits and shards; returns photos prepared."""
    from facectx.config import parse_params
    from facectx.steps.prepare import prepare_step

    result = prepare_step(parse_params(params_yaml), raw.path, validated.path, prepared.path)
    for name, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(name, value)
    return result["prepared"]
