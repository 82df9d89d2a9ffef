"""The training pipeline: ingest -> validate -> prepare -> train@8 ... train@128 (the cascade, and
in parallel each comparison model params' `compare` names) -> evaluate -> register -> promote, one
GAN stage per step on a GPU node, each starting from the previous stage's model."""
import json
from pathlib import Path

import yaml
from kfp import dsl

from components.evaluate import evaluate
from components.ingest import ingest
from components.prepare import prepare
from components.register import promote, register
from components.train_stage import compared_variants, train_stage
from components.validate import validate
from pipelines.gpu import MLFLOW_URI, on_gpu, with_services

REPO = Path(__file__).resolve().parents[1]
# One line of JSON (valid YAML): kfp copies defaults into a header comment, where a multi-line
# string would break the compiled file.
DEFAULT_PARAMS_YAML = json.dumps(yaml.safe_load((REPO / "params.yaml").read_text()))
STAGES = (8, 16, 32, 64, 128)


def training_steps(params_yaml, prepared, run_name, mlflow_tracking_uri, variant="", label="cascade", stages=STAGES):
    """train@8 ... train@N chained through their models; returns the last task."""
    previous = None
    for stage in stages:
        inputs = {"previous": previous.outputs["model"]} if previous is not None else {}
        task = train_stage(params_yaml=params_yaml, stage=stage, run_name=run_name, mlflow_tracking_uri=mlflow_tracking_uri,
                           prepared=prepared, variant=variant, **inputs)
        previous = on_gpu(task.set_display_name(f"{label} train@{stage}"))
    return previous


@dsl.pipeline(name="facectx-training", description="Hallucinating face context: the cascaded multi-scale GAN")
def training_pipeline(source: str = "", params_yaml: str = DEFAULT_PARAMS_YAML, run_name: str = "cascade",
                      mlflow_tracking_uri: str = MLFLOW_URI):
    """`source` overrides params' ingest.source (a folder on the node, or s3://bucket/prefix)."""
    raw = with_services(ingest(params_yaml=params_yaml, source=source).set_display_name("ingest"))
    checked = validate(params_yaml=params_yaml, raw=raw.outputs["raw"]).set_display_name("validate")
    prepared = prepare(params_yaml=params_yaml, raw=raw.outputs["raw"], validated=checked.outputs["validated"])
    prepared.set_display_name("prepare").set_cpu_request("4").set_memory_request("8G")
    last = training_steps(params_yaml, prepared.outputs["prepared"], run_name, mlflow_tracking_uri)
    # The comparison models named by params' `compare` train in parallel, each its own chain.
    compared = compared_variants(params_yaml=params_yaml).set_display_name("compared variants")
    with dsl.ParallelFor(items=compared.output) as variant:
        variant_last = training_steps(params_yaml, prepared.outputs["prepared"], variant, mlflow_tracking_uri,
                                      variant=variant, label="variant")
    scored = evaluate(params_yaml=params_yaml, mlflow_tracking_uri=mlflow_tracking_uri, prepared=prepared.outputs["prepared"],
                      raw=raw.outputs["raw"], model=last.outputs["model"], variants=dsl.Collected(variant_last.outputs["model"]))
    with_services(scored.set_display_name("evaluate").set_cpu_request("8").set_memory_request("16G"))
    registered = register(params_yaml=params_yaml, mlflow_tracking_uri=mlflow_tracking_uri, model=last.outputs["model"],
                          evaluation=scored.outputs["evaluation"], prepared=prepared.outputs["prepared"], raw=raw.outputs["raw"])
    with_services(registered.set_display_name("register"))
    with_services(promote(params_yaml=params_yaml, mlflow_tracking_uri=mlflow_tracking_uri,
                          version=registered.output).set_display_name("promote"))
