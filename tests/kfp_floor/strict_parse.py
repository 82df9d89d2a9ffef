"""Parse a compiled pipeline the way a Kubeflow Pipelines backend does, under the protobuf definitions
installed in the Python running this script (a build/kfp-floor/<version> venv, which holds only
kfp-pipeline-spec, kfp-kubernetes and protobuf of that backend release).

stdin: JSON [pipeline spec, platform spec] (the two YAML documents of the compiled file);
stdout: JSON list of errors, empty when every message parses. Unknown fields and enum values are
errors (json_format.ParseDict without ignore_unknown_fields), as they are for the backend:
- the API server parses the uploaded pipeline spec and platform spec with protojson.Unmarshal, which
  rejects unknown fields (backend/src/apiserver/template/v2_template.go, NewV2SpecTemplate);
- at run creation the Argo compiler parses each executor's Kubernetes config into
  KubernetesExecutorConfig, also with plain protojson.Unmarshal (argocompiler/container.go);
- deploymentSpec is a Struct in PipelineSpec; the backend reads it into PipelineDeploymentConfig with
  DiscardUnknown (compiler/visitor.go GetDeploymentConfig): an unknown field there is dropped in
  silence (a GPU or memory request a backend does not know would be ignored), so it is an error here.

Runs with `python -I` in that venv: only the standard library and those packages are importable.
"""

import importlib.util
import json
import pathlib
import sys

import kfp  # namespace package here: kfp.pipeline_spec and kfp.kubernetes only, no SDK
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2


def kubernetes_protos():
    """kfp.kubernetes' generated module, loaded by path: the package's __init__ imports the kfp SDK,
    which this venv does not hold (and must not: it would bring its own newer protos)."""
    path = pathlib.Path(next(iter(kfp.__path__))) / "kubernetes" / "kubernetes_executor_config_pb2.py"
    spec = importlib.util.spec_from_file_location("kubernetes_executor_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    pipeline, platform = json.load(sys.stdin)
    kubernetes = kubernetes_protos()
    messages = [
        ("pipeline spec", pipeline, pipeline_spec_pb2.PipelineSpec()),
        ("deploymentSpec", pipeline.get("deploymentSpec", {}), pipeline_spec_pb2.PipelineDeploymentConfig()),
        ("platform spec", platform, pipeline_spec_pb2.PlatformSpec()),
    ]
    executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    for name, config in sorted(executors.items()):
        messages.append((f"kubernetes config of {name}", config, kubernetes.KubernetesExecutorConfig()))
    errors = []
    for where, document, message in messages:
        try:
            json_format.ParseDict(document, message)
        except json_format.ParseError as err:
            errors.append(f"{where}: {err}")
    json.dump(errors, sys.stdout)


if __name__ == "__main__":
    main()
