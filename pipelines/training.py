"""The training pipeline: ingest -> validate -> prepare (training stages follow in later steps)."""
import json
from pathlib import Path

import yaml
from kfp import dsl

from components.ingest import ingest
from components.prepare import prepare
from components.validate import validate

REPO = Path(__file__).resolve().parents[1]
# One line of JSON (valid YAML): kfp copies defaults into a header comment, where a multi-line
# string would break the compiled file.
DEFAULT_PARAMS_YAML = json.dumps(yaml.safe_load((REPO / "params.yaml").read_text()))


@dsl.pipeline(name="facectx-training", description="Hallucinating face context: data steps of the cascaded GAN pipeline")
def training_pipeline(source: str = "", params_yaml: str = DEFAULT_PARAMS_YAML):
    """`source` overrides params' ingest.source (a folder on the node, or s3://bucket/prefix)."""
    raw = ingest(params_yaml=params_yaml, source=source).set_display_name("ingest")
    checked = validate(params_yaml=params_yaml, raw=raw.outputs["raw"]).set_display_name("validate")
    prepare(params_yaml=params_yaml, raw=raw.outputs["raw"], validated=checked.outputs["validated"]).set_display_name("prepare")
