"""The compiled pipeline runs on the Kubeflow Pipelines backend README.md names as the oldest (kfp_floor.FLOOR,
what the previous Kubeflow release ships), and on nothing older: it parses, unknown fields refused, under
the protobuf definitions that backend ships, and uses no backend feature added after it.
The protos of each backend live in their own venv (scripts/install-test-deps.sh); see tests/kfp_floor."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from kfp import compiler, dsl, kubernetes
from kfp_floor import BELOW_FLOOR, FLOOR, REPO, features, parse_errors

from pipelines.compile import compile_pipeline

KUBEFLOW_1_10 = "2.5.0"  # the KFP of Kubeflow 1.10.2 (1.10.0: 2.4.1)


def _documents(path) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """The pipeline as `facectx pipeline compile` writes it, and as `facectx pipeline submit` sends it
    (two compared models at once; two GPUs a stage for DDP)."""
    folder = tmp_path_factory.mktemp("kfp-floor")
    params = REPO / "params.yaml"
    return {
        "compile": _documents(compile_pipeline(params, folder / "compile.yaml")),
        "submit": _documents(compile_pipeline(params, folder / "submit.yaml", gpus_per_stage=2, parallelism=2)),
    }


def test_pipeline_parses_under_the_floor_backends_protos(compiled):
    for how, (pipeline, platform) in compiled.items():
        assert parse_errors(pipeline, platform, FLOOR) == [], f"`facectx pipeline {how}` output, KFP {FLOOR}"


def test_the_release_below_the_floor_refuses_the_pipeline(compiled):
    """KFP 2.14's protos lack SecretAsEnv.optional, which kfp-kubernetes writes on every secret it
    mounts: its Argo compiler refuses the run. So the floor is FLOOR, not lower."""
    pipeline, platform = compiled["compile"]
    errors = parse_errors(pipeline, platform, BELOW_FLOOR)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secret_users = {name for name, config in executors.items() if config.get("secretAsEnv")}
    assert secret_users
    assert {error.split(":")[0] for error in errors} == {f"kubernetes config of {name}" for name in secret_users}
    assert all('"kfp_kubernetes.SecretAsEnv" has no field named "optional"' in error for error in errors), errors


def test_a_field_newer_than_the_floor_is_refused(tmp_path):
    """What a later feature looks like to the check, compiled by this project's kfp:
    kubernetes.set_security_context (KubernetesExecutorConfig.security_context, KFP 2.16) and a
    pipeline TTL (PipelineConfig.resource_ttl_on_completion, KFP 2.17)."""

    @dsl.component(base_image="python:3.11")
    def step():  # no annotations: this module's `from __future__ import annotations` makes them strings
        pass

    @dsl.pipeline(name="newer", pipeline_config=dsl.PipelineConfig(ttl_seconds_after_finished=3600))
    def newer():
        kubernetes.set_security_context(step(), run_as_user=10001)

    path = tmp_path / "newer.yaml"
    compiler.Compiler().compile(newer, str(path))
    errors = parse_errors(*_documents(path), FLOOR)
    assert any('no field named "securityContext"' in error for error in errors), errors
    assert any(error.startswith("platform spec:") and "resourceTtlOnCompletion" in error for error in errors), errors


def test_uses_no_backend_feature_newer_than_the_floor(compiled):
    for how, (pipeline, platform) in compiled.items():
        used = features.used(pipeline, platform)
        too_new = {feature.name: where for feature, where in used.items() if not feature.supported_by(FLOOR)}
        assert not too_new, f"`facectx pipeline {how}` needs a backend newer than KFP {FLOOR}: {too_new}"
        # The floor is the newest of what it needs: README's version is no higher than it must be.
        assert max(features.version_tuple(feature.since) for feature in used) == features.version_tuple(FLOOR)


def test_features_found_are_those_the_pipeline_relies_on(compiled):
    """The markers see the real pipeline: the compared models' fan-in into evaluate, the retried
    training steps inside the ParallelFor, the run id; and they are why Kubeflow 1.10 cannot run it."""
    pipeline, platform = compiled["submit"]
    used = {feature.name: where for feature, where in features.used(pipeline, platform).items()}
    assert used["dsl.Collected over a ParallelFor's output artifacts (fan-in)"] == ["root/evaluate.variants"]
    loop_retries = used["retry policy of a task inside a ParallelFor or sub-DAG"]
    cascade_retries = used["retry policy of a task in the root DAG"]
    assert len(loop_retries) == len(cascade_retries), "each cascade training step has its twin in the loop"
    assert used["run id placeholder (dsl.PIPELINE_JOB_ID_PLACEHOLDER)"]
    assert used["ParallelFor parallelism limit (iteratorPolicy.parallelismLimit)"]
    needs_newer = {
        feature.name for feature in features.used(pipeline, platform) if not feature.supported_by(KUBEFLOW_1_10)
    }
    assert needs_newer == {
        "retry policy of a task inside a ParallelFor or sub-DAG",
        "dsl.Collected over a ParallelFor's output artifacts (fan-in)",
        "optional flag of a secret or config map as env (SecretAsEnv.optional, written by kfp-kubernetes >= 2.15)",
    }


def test_a_named_parallel_for_feeding_collected_is_flagged(compiled):
    """ParallelFor(name=...) breaks dsl.Collected in every backend release (#13239): the marker sees it."""
    pipeline, platform = copy.deepcopy(compiled["compile"])
    assert not features.FEATURES[-1].find(pipeline, platform)
    loop = next(task for _, _, task in features._tasks(pipeline) if features._is_loop(task))
    loop["taskInfo"]["name"] = "compared models"
    (flagged,) = [feature for feature in features.used(pipeline, platform) if feature.since is None]
    assert not flagged.supported_by("99.0.0")


def test_readmes_state_the_floor():
    floor = ".".join(FLOOR.split(".")[:2])
    for readme in ("README.md", "infra/README.md"):
        stated = re.findall(r"Kubeflow Pipelines (\d+\.\d+)\S* or newer", (REPO / readme).read_text())
        assert stated and set(stated) == {floor}, f"{readme} states KFP {stated}, the floor is {floor}"
